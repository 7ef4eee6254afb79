"""The ASGI app (Starlette) and how it is served (uvicorn): the page, its files and the HTTP API.

Routes (docs/app.md): ``GET /`` the page, ``/static/...`` its scripts and styles (three.js vendored,
nothing from another host), ``GET /api/health``, ``GET /api/examples`` and ``/examples/<name>``,
``POST /api/reconstruct`` (multipart ``image``, optional ``resolution``, ``surface``, ``format``,
``completion``, ``cavities``, ``gaps``) → the mesh, ``POST /api/transfer`` (``source``, ``target``,
optional ``where``) and ``POST /api/paste`` (``target``, ``logo``, ``x``, ``y``, optional ``size``,
``blend``) → the application's mesh, all three through the same worker queue, ``GET /api/results/<id>``
(JSON: the images, both surfaces' files) and ``GET /api/results/<id>/<file>``. Every error is JSON
``{"error": "<one line>"}`` with a 4xx status (503 when the queue is full or a request waited too long,
500 with no detail for a bug, whose traceback goes to the server's log only).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import socket
import sys
import threading
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from d2im_tf.app.service import Service
from d2im_tf.app.validation import (
    MESH_FORMATS,
    RESOLUTIONS,
    SURFACES,
    WHERE,
    ApiError,
    Limits,
    check_length,
    read_form,
    read_paste_form,
    read_transfer_form,
    too_large_message,
)
from d2im_tf.app.workers import Busy, WorkerPool

STATIC = Path(__file__).resolve().parent / "static"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"  # in a checkout; none in an installed wheel
log = logging.getLogger("d2im.app")


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def content_security_policy(page: str) -> str:
    """Only this server's own scripts, styles, images and API; the page's inline import map by its hash."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in re.findall(r"<script type=\"importmap\">(.*?)</script>", page, re.S)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def build_app(
    service: Service, pool: WorkerPool, limits: Limits | None = None, examples_dir: Path | None = EXAMPLES
) -> Starlette:
    """The app serving ``service`` through ``pool`` under ``limits`` (default :class:`Limits`)."""
    limits = limits or Limits()
    page = (STATIC / "index.html").read_text()
    page_headers = {"Content-Security-Policy": content_security_policy(page), "Cache-Control": "no-cache"}
    examples = {path.name: path for path in sorted(Path(examples_dir).glob("*.png"))} if examples_dir else {}

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html", headers=page_headers)

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": service.model_name,
                "image_size": service.image_size,
                "resolutions": list(RESOLUTIONS),
                "surfaces": list(SURFACES),
                "applications": service.applications_error is None,  # /api/transfer and /api/paste
                "where": list(WHERE),
                "workers": pool.workers,
                "running": pool.running,
                "waiting": pool.waiting,
                "max_waiting": pool.max_waiting,
                "max_upload_bytes": limits.max_bytes,
                "max_pixels": limits.max_pixels,
            }
        )

    async def list_examples(request: Request) -> Response:
        return JSONResponse({"examples": [{"name": name, "url": f"/examples/{name}"} for name in examples]})

    async def example(request: Request) -> Response:
        path = examples.get(request.path_params["name"])
        if path is None:
            raise ApiError(404, "no such example")
        return FileResponse(path, media_type="image/png")

    async def run(request: Request, files: tuple[str, ...], read, make):
        """Read and check the form (``read``), run ``make(job)`` in a worker, answer with the mesh file."""
        received = time.perf_counter()
        form = await read_multipart(request, limits, files)
        try:
            job = await read(form, limits)
        finally:
            await form.close()

        def work():  # in a worker thread
            started = time.perf_counter()
            result, surface = make(job)
            body = service.mesh_file(result, surface, job.mesh_format)
            return result, surface, body, started, time.perf_counter()

        result, surface, body, started, finished = await pool.run(work)
        total = time.perf_counter() - received
        mesh = result.meshes[surface]
        headers = {
            "X-Server-Time": f"{total:.3f}",  # seconds from the request's arrival to the mesh file
            "X-Result-Id": result.id,
            "Location": f"/api/results/{result.id}",
            "X-Mesh-Vertices": str(len(mesh.vertices)),
            "X-Mesh-Faces": str(len(mesh.faces)),
            "Server-Timing": f"queue;dur={(started - received) * 1000:.0f}, "
            f"{result.kind};dur={(finished - started) * 1000:.0f}",
            "Content-Disposition": f'attachment; filename="d2im_{result.id}_{surface}.{job.mesh_format}"',
        }
        return Response(body, media_type=MESH_FORMATS[job.mesh_format], headers=headers)

    async def reconstruct(request: Request) -> Response:
        def make(job):
            cleanup = dict(fill_cavities=job.fill_cavities, bridge_gaps=job.bridge_gaps)
            return service.reconstruct(job.pixels, job.resolution, job.surface, job.completion, **cleanup), job.surface

        return await run(request, ("image",), read_form, make)

    async def transfer(request: Request) -> Response:
        def make(job):
            return service.transfer(job.source, job.target, job.where, job.resolution), "transfer"

        return await run(request, ("source", "target"), read_transfer_form, make)

    async def paste(request: Request) -> Response:
        def make(job):
            return service.paste(job.target, job.logo, job.at, job.size, job.blend, job.resolution), "paste"

        return await run(request, ("target", "logo"), read_paste_form, make)

    async def result_json(request: Request) -> Response:
        return JSONResponse(service.describe(service.get(request.path_params["id"])))

    async def result_file(request: Request) -> Response:
        result = service.get(request.path_params["id"])
        stem, _, extension = request.path_params["file"].partition(".")
        if extension == "png" and stem in result.images:
            return Response(service.image_file(result, stem), media_type="image/png")
        if stem in result.surfaces and extension in MESH_FORMATS:
            if stem not in result.meshes:
                await pool.run(service.surface, result, stem)
            started = time.perf_counter()
            body = await run_in_threadpool(service.mesh_file, result, stem, extension)
            # no file name: the page's download links name the file after the upload
            return Response(
                body,
                media_type=MESH_FORMATS[extension],
                headers={"X-Server-Time": f"{result.seconds[stem] + time.perf_counter() - started:.3f}"},
            )
        images = ", ".join(f"{name}.png" for name in result.images)
        raise ApiError(404, f"no such file; this result has {images} and {'|'.join(result.surfaces)}.glb|obj|ply")

    async def api_error(request: Request, error: ApiError) -> Response:
        return error_response(error.status, error.message)

    async def busy(request: Request, error: Busy) -> Response:
        return JSONResponse({"error": str(error)}, status_code=503, headers={"Retry-After": "5"})

    async def http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 405:
            allowed = error.headers.get("Allow", "") if error.headers else ""
            message = f"method {request.method} is not allowed on {request.url.path}; use {allowed}"
            return JSONResponse({"error": message}, status_code=405, headers={"Allow": allowed})
        if error.status_code == 404:
            return error_response(404, f"not found: {request.url.path[:100]}")
        return error_response(error.status_code, " ".join(str(error.detail).split())[:200])

    async def internal_error(request: Request, error: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return error_response(500, "internal error (the server's log has the details)")

    routes = [
        Route("/", index),
        Route("/api/health", health),
        Route("/api/examples", list_examples),
        Route("/examples/{name}", example),
        Route("/api/reconstruct", reconstruct, methods=["POST"]),
        Route("/api/transfer", transfer, methods=["POST"]),
        Route("/api/paste", paste, methods=["POST"]),
        Route("/api/results/{id}", result_json),
        Route("/api/results/{id}/{file}", result_file),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {ApiError: api_error, Busy: busy, HTTPException: http_error, Exception: internal_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.service, app.state.pool = service, pool
    return app


async def read_multipart(request: Request, limits: Limits, files: tuple[str, ...] = ("image",)):
    """The parsed multipart form of ``request`` (at most ``len(files)`` files), its body read up to
    ``limits.max_bytes``."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        where = f"the field {files[0]!r}" if len(files) == 1 else "the fields " + " and ".join(map(repr, files))
        raise ApiError(
            415,
            f"expected a multipart/form-data body with the image{'s' * (len(files) > 1)} in {where} "
            f"(got {content_type.split(';')[0][:60] or 'no Content-Type'})",
        )
    check_length(request.headers.get("content-length"), limits)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_bytes:
                raise ApiError(413, too_large_message(len(body), limits))
    except ClientDisconnect:  # nobody to answer; not a server error
        raise ApiError(400, "the client disconnected during the upload") from None

    async def replay():
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=len(files), max_fields=8)
    except HTTPException as error:  # python-multipart's complaint about the framing
        raise ApiError(400, f"malformed multipart body ({' '.join(str(error.detail).split())[:160]})") from None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(app, access_log: bool = False):
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        timeout_keep_alive=5,
        limit_concurrency=256,
        lifespan="off",
    )
    return uvicorn.Server(config)


class ServerThread:
    """``app`` served on ``host`` at a free port in a daemon thread (tests and benchmarks): ``url``, ``stop()``."""

    def __init__(self, app, host: str = "127.0.0.1"):
        self.socket = bind(host, 0)
        self.url = url_of(self.socket)
        self.server = uvicorn_server(app)
        self.server.config.log_level = "error"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


def serve(app, host: str, port: int, access_log: bool = False) -> None:
    """Serve ``app`` on ``host:port`` until interrupted; prints the URL (a warning first if not loopback)."""
    sock = bind(host, port)
    if not _is_loopback(host):
        print(
            f"warning: listening on {host}, reachable from other machines; the app has no authentication "
            "(the default --host 127.0.0.1 is local only)",
            file=sys.stderr,
        )
    print(f"d2im app: serving {app.state.service.model_name} on {url_of(sock)}/ (Ctrl-C stops it)", flush=True)
    try:
        uvicorn_server(app, access_log).run(sockets=[sock])
    finally:
        app.state.pool.shutdown()
        sock.close()


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
