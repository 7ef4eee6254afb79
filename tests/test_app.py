"""``d2im app``'s HTTP API without a browser, on a tiny random-weight export: the mesh it returns is
the library's (:class:`~d2im_tf.inference.reconstruct.Reconstructor`), the results' files match their
sources, each bad input of docs/app.md gets its one-line 4xx, a full queue gets 503, and the server
stays healthy after all of them. Transfer and paste on the bundled model: their meshes are the
library's (:mod:`d2im_tf.applications`), a paste is the target's own mesh away from the logo, and their
bad inputs get their 4xx too."""

import io
import json
import struct
import threading
import time

import numpy as np
import pytest
import trimesh
from PIL import Image

from d2im_tf.app.validation import ApiError, Limits, decode_image
from d2im_tf.app.workers import Busy, WorkerPool
from d2im_tf.data.disn_format import read_image
from d2im_tf.inference.reconstruct import Reconstructor, prepare_image

from app_server import EXAMPLE, EXAMPLES, ROOT, huge_png, multipart, png_bytes, post_image, request, served

RESOLUTION = "64"


@pytest.fixture(scope="module")
def tiny_model(tiny_export):
    return tiny_export("full", with_camera=True).path


@pytest.fixture(scope="module")
def app_url(tiny_model):
    with served(tiny_model) as (url, _, _):
        yield url


@pytest.fixture(scope="module")
def library(tiny_model):
    """The library's own reconstructions of the example at 64³, both surfaces: the truth the API must return."""
    reconstructor = Reconstructor(tiny_model, resolution=64)
    pixels = read_image(EXAMPLE)
    return {surface: reconstructor.reconstruct(pixels, surface=surface) for surface in ("detailed", "base")}


def glb_mesh(data: bytes) -> trimesh.Trimesh:
    """A GLB checked against the glTF 2.0 container layout (magic, version, total length, JSON chunk
    first), then loaded by trimesh."""
    magic, version, length = struct.unpack_from("<4sII", data)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    chunk_length, chunk_type = struct.unpack_from("<I4s", data, 12)
    assert chunk_type == b"JSON" and json.loads(data[20 : 20 + chunk_length])["asset"]["version"] == "2.0"
    return trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")


def same_mesh(a: trimesh.Trimesh, b: trimesh.Trimesh) -> bool:
    return len(a.faces) == len(b.faces) and np.allclose(
        np.sort(a.vertices, axis=0), np.sort(b.vertices, axis=0), atol=1e-5
    )


def test_health_names_the_model(app_url, tiny_model):
    status, headers, body = request(f"{app_url}/api/health")
    health = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert health["status"] == "ok" and health["model"] == tiny_model.parent.name and health["image_size"] == 32
    assert health["resolutions"] == [64, 128, 256]


def test_reconstruct_returns_the_library_mesh_as_glb(app_url, library):
    status, headers, body = post_image(app_url, EXAMPLE.read_bytes(), resolution=RESOLUTION)
    assert status == 200, body[:300]
    assert headers["content-type"] == "model/gltf-binary"
    assert float(headers["x-server-time"]) > 0
    mesh = glb_mesh(body)
    assert len(mesh.faces) == int(headers["x-mesh-faces"]) > 0
    assert same_mesh(mesh, library["detailed"].mesh)


def test_results_hold_the_input_maps_and_both_surfaces(app_url, library):
    status, headers, _ = post_image(app_url, EXAMPLE.read_bytes(), resolution=RESOLUTION)
    assert status == 200
    status, _, body = request(app_url + headers["location"])
    result = json.loads(body)
    assert status == 200 and result["resolution"] == 64 and result["id"] == headers["x-result-id"]
    truth = library["detailed"]

    def png(path):
        status, headers, data = request(app_url + path)
        assert status == 200 and headers["content-type"] == "image/png"
        return np.asarray(Image.open(io.BytesIO(data)))

    expected_input = np.round(truth.image * 255).astype(np.uint8)  # what the network saw (matted, re-framed)
    np.testing.assert_array_equal(png(result["images"]["input"]), expected_input)
    front, back = png(result["images"]["front"]), png(result["images"]["back"])
    assert front.shape == back.shape == (32, 32, 3)
    assert result["map_scale"] == pytest.approx(float(np.abs(truth.maps).max()), rel=1e-5)
    # the colour scale: white (255, 255, 255) exactly where a map is 0, red where positive
    positive = truth.maps[..., 0] > 0.05 * result["map_scale"]
    assert np.all(front[positive][:, 0] >= front[positive][:, 2])
    assert not result["surfaces"]["base"]["made"]
    status, headers, body = request(app_url + result["surfaces"]["base"]["files"]["glb"])
    assert status == 200 and same_mesh(glb_mesh(body), library["base"].mesh)
    assert not same_mesh(library["base"].mesh, truth.mesh)
    for mesh_format in ("obj", "ply"):
        status, _, body = request(app_url + result["surfaces"]["detailed"]["files"][mesh_format])
        assert status == 200
        loaded = trimesh.load(io.BytesIO(body), file_type=mesh_format, force="mesh", process=False)
        assert len(loaded.faces) == len(truth.mesh.faces)
    assert json.loads(request(app_url + headers.get("location", f"/api/results/{result['id']}"))[2])["surfaces"][
        "base"
    ]["made"]


def test_format_and_surface_options(app_url, library):
    status, headers, body = post_image(
        app_url, EXAMPLE.read_bytes(), resolution=RESOLUTION, surface="base", format="ply"
    )
    assert status == 200 and headers["content-type"] == "application/ply"
    mesh = trimesh.load(io.BytesIO(body), file_type="ply", force="mesh", process=False)
    assert len(mesh.faces) == len(library["base"].mesh.faces)


def test_completion_option_is_the_library_completion(app_url, tiny_model):
    """``completion=on`` returns what ``Reconstructor(complete=True)`` makes of the same upload, and says so."""
    status, headers, body = post_image(app_url, EXAMPLE.read_bytes(), resolution=RESOLUTION, completion="on")
    assert status == 200, body[:300]
    made = Reconstructor(tiny_model, resolution=64, complete=True).reconstruct(read_image(EXAMPLE))
    assert "completion" in made.timings  # the completion ran (a random model leaves many rays unentered)
    assert same_mesh(glb_mesh(body), made.mesh)
    result = json.loads(request(app_url + headers["location"])[2])
    assert result["completion"] is True
    status, headers, _ = post_image(app_url, EXAMPLE.read_bytes(), resolution=RESOLUTION)
    assert json.loads(request(app_url + headers["location"])[2])["completion"] is False


def test_keep_options_are_the_library_without_surface_cleanup(app_url, tiny_model, library):
    """``gaps=keep`` and ``cavities=keep`` return what ``Reconstructor(fill_cavities=False,
    bridge_gaps=False)`` makes of the same upload, the base shape made later too, and say so."""
    status, headers, body = post_image(
        app_url, EXAMPLE.read_bytes(), resolution=RESOLUTION, gaps="keep", cavities="keep"
    )
    assert status == 200, body[:300]
    kept = Reconstructor(tiny_model, resolution=64, fill_cavities=False, bridge_gaps=False)
    pixels = read_image(EXAMPLE)
    made = {surface: kept.reconstruct(pixels, surface=surface).mesh for surface in ("detailed", "base")}
    assert same_mesh(glb_mesh(body), made["detailed"])
    result = json.loads(request(app_url + headers["location"])[2])
    assert result["fill_cavities"] is False and result["bridge_gaps"] is False and result["completion"] is False
    status, _, body = request(app_url + result["surfaces"]["base"]["files"]["glb"])  # made with the same settings
    assert status == 200 and same_mesh(glb_mesh(body), made["base"])
    assert not all(same_mesh(made[surface], library[surface].mesh) for surface in made)  # the clean-up is off
    status, headers, _ = post_image(app_url, EXAMPLE.read_bytes(), resolution=RESOLUTION, gaps="keep")
    result = json.loads(request(app_url + headers["location"])[2])
    assert result["fill_cavities"] is True and result["bridge_gaps"] is False
    status, headers, _ = post_image(app_url, EXAMPLE.read_bytes(), resolution=RESOLUTION)
    result = json.loads(request(app_url + headers["location"])[2])
    assert result["fill_cavities"] is True and result["bridge_gaps"] is True


def test_with_cleanup_is_the_constructor_setting(tiny_model):
    """``with_cleanup`` shares the loaded model and sets what ``fill_cavities`` and ``bridge_gaps`` set."""
    default = Reconstructor(tiny_model, resolution=64)
    kept = Reconstructor(tiny_model, resolution=64, fill_cavities=False, bridge_gaps=False)
    off = default.with_cleanup(False, False)
    assert off.model is default.model and (off.fill_cavities, off.bridging) == (False, None)
    assert default.fill_cavities and default.bridging is not None  # unchanged
    on = kept.with_cleanup(True, True)
    assert on.model is kept.model and on.fill_cavities and on.bridging == default.bridging
    mixed = default.with_cleanup(True, False)
    assert (mixed.fill_cavities, mixed.bridging) == (True, None)


def bad_requests():
    """(name, method, body, headers, status, words in the message) for each bad input of docs/app.md."""
    example = EXAMPLE.read_bytes()
    corrupt = example[:200] + bytes(range(256)) * 8  # a PNG header, then garbage
    random_bytes = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()

    def form(fields):
        body, content_type = multipart(fields)
        return body, {"Content-Type": content_type}

    return [
        ("corrupt PNG", "POST", *form({"image": ("c.png", corrupt)}), 400, "not a readable"),
        ("not an image", "POST", *form({"image": ("r.png", random_bytes)}), 415, "png, jpeg or webp"),
        ("0 bytes", "POST", *form({"image": ("e.png", b"")}), 400, "empty"),
        ("100 MB upload", "POST", *form({"image": ("big.png", example + bytes(100 * 2**20))}), 413, "too large"),
        ("20000² PNG", "POST", *form({"image": ("bomb.png", huge_png(20000, 20000))}), 413, "too large"),
        ("wrong field", "POST", *form({"file": ("x.png", example)}), 400, "'image' is missing"),
        ("image as text", "POST", *form({"image": "abc"}), 400, "is text, not a file"),
        ("unknown field", "POST", *form({"image": ("x.png", example), "colour": "red"}), 400, "unknown field"),
        ("bad resolution", "POST", *form({"image": ("x.png", example), "resolution": "100"}), 400, "64, 128, 256"),
        ("bad surface", "POST", *form({"image": ("x.png", example), "surface": "fine"}), 400, "detailed, base"),
        ("bad completion", "POST", *form({"image": ("x.png", example), "completion": "yes"}), 400, "off, on"),
        ("bad gaps", "POST", *form({"image": ("x.png", example), "gaps": "fill"}), 400, "bridge, keep"),
        ("bad cavities", "POST", *form({"image": ("x.png", example), "cavities": "no"}), 400, "fill, keep"),
        ("not multipart", "POST", b'{"image": 1}', {"Content-Type": "application/json"}, 415, "multipart"),
        ("wrong method", "GET", None, {}, 405, "use post"),
        (
            "broken multipart",
            "POST",
            b"--x\r\nno headers",
            {"Content-Type": "multipart/form-data; boundary=x"},
            400,
            "malformed multipart",
        ),
    ]


@pytest.mark.parametrize("case", bad_requests(), ids=lambda case: case[0])
def test_bad_input_gets_one_line_and_the_server_stays_healthy(app_url, case):
    _, method, body, headers, status, words = case
    got, response_headers, data = request(f"{app_url}/api/reconstruct", method, body, headers)
    assert got == status, data[:300]
    assert response_headers["content-type"] == "application/json"
    message = json.loads(data)["error"]
    assert words in message.lower() and "\n" not in message and len(message) < 250
    assert str(ROOT) not in message and "Traceback" not in message
    assert request(f"{app_url}/api/health")[0] == 200


def test_after_every_bad_input_a_good_one_still_works(app_url):
    for case in bad_requests():
        request(f"{app_url}/api/reconstruct", case[1], case[2], case[3])
    status, _, body = request(f"{app_url}/api/health")
    assert status == 200 and json.loads(body)["waiting"] == 0
    status, _, body = post_image(app_url, EXAMPLE.read_bytes(), resolution=RESOLUTION)
    assert status == 200 and len(glb_mesh(body).faces) > 0


def test_unknown_paths_results_and_files_are_json_404(app_url):
    for path in ("/nope", "/api/results/0123", "/examples/../README.md", "/static/../server.py"):
        status, headers, body = request(app_url + path)
        assert status == 404 and "error" in json.loads(body), path


def test_a_crash_reaches_the_client_as_a_bare_500(tiny_model, monkeypatch):
    with served(tiny_model) as (url, service, _):

        def crash(*args):
            raise RuntimeError(f"secret detail in {ROOT}")

        monkeypatch.setattr(service, "reconstruct", crash)
        status, _, body = post_image(url, EXAMPLE.read_bytes(), resolution=RESOLUTION)
        assert status == 500 and "secret" not in body.decode() and json.loads(body)["error"].startswith("internal")
        assert request(f"{url}/api/health")[0] == 200


def test_a_full_queue_gets_503_and_the_running_request_finishes(tiny_model):
    """One worker, no waiting room: while a request runs, the next gets 503 at once."""
    with served(tiny_model, workers=1, max_waiting=0) as (url, _, pool):
        first = {}
        thread = threading.Thread(
            target=lambda: first.update(response=post_image(url, EXAMPLE.read_bytes(), resolution="128"))
        )
        thread.start()
        deadline = time.monotonic() + 60
        while pool.running == 0 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.running == 1, first.get("response", [None, None, b""])[::2]
        status, headers, body = post_image(url, EXAMPLE.read_bytes(), resolution=RESOLUTION)
        thread.join()
        assert status == 503 and headers["retry-after"] and "busy" in json.loads(body)["error"]
        assert first["response"][0] == 200


def test_worker_pool_withdraws_a_request_that_waited_too_long():
    import asyncio

    release = threading.Event()

    async def scenario():
        pool = WorkerPool(workers=1, max_waiting=1, wait_timeout=0.2)
        running = asyncio.ensure_future(pool.run(release.wait, 5))
        while pool.running == 0:
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(pool.run(lambda: "ran"))
        await asyncio.sleep(0)
        with pytest.raises(Busy, match="1 running, 1 waiting"):  # the waiting room (1) is full
            await pool.run(lambda: "ran")
        with pytest.raises(Busy, match="within 0.2 s"):
            await waiting
        assert pool.waiting == 0
        release.set()
        assert await running is True
        assert await pool.run(lambda: "ran") == "ran"  # the withdrawn job never ran; the pool still works
        pool.shutdown()

    asyncio.run(scenario())


def test_pixels_are_counted_before_decoding(monkeypatch):
    """An image over the pixel limit is refused from its header: decoding it would fail the test."""
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ApiError, match="5000×3000 pixels; the limit is 4000000 pixels \\(2000×2000\\)"):
        decode_image(huge_png(5000, 3000), Limits(max_pixels=2000 * 2000))
    with pytest.raises(ApiError, match="too large: over"):  # past Pillow's own bomb limit
        decode_image(huge_png(20000, 20000), Limits())


def test_decode_image_reads_what_read_image_reads(tmp_path):
    rng = np.random.default_rng(3)
    for pixels in (
        rng.integers(0, 256, (20, 30, 4), dtype=np.uint8),
        rng.integers(0, 256, (20, 30), dtype=np.uint8),
        rng.integers(0, 65536, (20, 30), dtype=np.uint16),
    ):
        data = png_bytes(pixels)
        (tmp_path / "x.png").write_bytes(data)
        np.testing.assert_array_equal(decode_image(data, Limits()), read_image(tmp_path / "x.png"))


def test_the_base_surface_is_the_zero_set_of_f_b(tiny_model, library):
    """``Reconstructor.reconstruct(surface="base")``: its coarse-to-fine mesh is the dense grid's, and
    f_B, decoded by the SavedModel at its vertices, is within one cell's change of 0 there, while the
    fused field is not."""
    import tensorflow as tf

    pixels = read_image(EXAMPLE)
    base = library["base"].mesh
    dense = Reconstructor(tiny_model, resolution=64, mode="dense").reconstruct(pixels, surface="base").mesh
    assert same_mesh(dense, base)
    reconstructor = Reconstructor(tiny_model, resolution=64)
    batch = tf.constant(prepare_image(pixels, reconstructor.image_size)[None])
    encoding = reconstructor.model.signatures["encode"](image=batch)
    projection = reconstructor.projection(batch)[0]
    out = reconstructor.model.signatures["decode"](
        points=tf.constant(base.vertices[None], tf.float32), projection=projection, **encoding
    )
    f_b, fused = np.abs(out["base"].numpy()[0]), np.abs(out["sdf"].numpy()[0])
    cell = 2.0 / 64  # the normalised box [-1, 1]³ at 64³
    assert f_b.max() < reconstructor.lipschitz * cell
    assert np.median(fused) > 3 * np.median(f_b)


def test_cli_rejects_a_bad_port_before_loading(capsys):
    from d2im_tf.cli import main

    assert main(["app", "--port", "70000", "--model", "/nonexistent"]) == 2
    assert capsys.readouterr().err.strip() == "error: --port must be between 0 and 65535, got 70000"


@pytest.mark.slow
def test_cli_serves_and_warns_when_bound_beyond_loopback(tiny_model):
    """``d2im app --host 0.0.0.0 --port 0``: a warning on stderr, the URL on stdout, a healthy API."""
    import os
    import signal
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "d2im_tf.cli",
        "app",
        "--model",
        str(tiny_model),
        "--host",
        "0.0.0.0",
        "--port",
        "0",
    ]
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        lines = []
        for line in server.stdout:
            lines.append(line)
            if " on http://" in line:
                break
        assert lines and lines[-1].startswith(f"d2im app: serving {tiny_model.parent.name} on http://0.0.0.0:"), lines
        port = int(lines[-1].split("http://0.0.0.0:", 1)[1].split("/", 1)[0])
        status, _, body = request(f"http://127.0.0.1:{port}/api/health")
        assert status == 200 and json.loads(body)["status"] == "ok"
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert "warning: listening on 0.0.0.0, reachable from other machines" in err


def test_the_vendored_three_js_is_the_locked_version_and_the_page_names_no_other_host():
    import re

    app = ROOT / "d2im_tf" / "app"
    pinned = json.loads((app / "npm" / "package.json").read_text())["dependencies"]["three"]
    locked = json.loads((app / "npm" / "package-lock.json").read_text())["packages"]["node_modules/three"]
    assert locked["version"] == pinned and locked["integrity"].startswith("sha512-")
    vendor = app / "static" / "vendor" / "three"
    revision = re.search(r"const REVISION = '(\d+)'", (vendor / "build" / "three.core.js").read_text()).group(1)
    assert pinned == f"0.{revision}.0"
    assert "MIT License" in (vendor / "LICENSE").read_text()
    page = (app / "static" / "index.html").read_text()
    imports = json.loads(re.search(r'<script type="importmap">(.*?)</script>', page, re.S).group(1))["imports"]
    assert (app / imports["three"].lstrip("/")).is_file()
    for source in (page, (app / "static" / "app.js").read_text(), (app / "static" / "style.css").read_text()):
        assert not re.search(r"(src|href|url)\s*[=(]\s*[\"']?(https?:)?//", source)


# ---------------------------------------------------------------- transfer and paste, on the bundled model

SOURCE, TARGET = EXAMPLES / "03001627_syn00005.png", EXAMPLES / "02933112_syn00003.png"  # a chair, a cabinet


def logo_png(side: int = 20) -> bytes:
    """A black square on a transparent ground, ``side`` pixels a side."""
    logo = np.zeros((side, side, 4), np.uint8)
    logo[side // 5 : -side // 5, side // 5 : -side // 5] = [0, 0, 0, 255]
    return png_bytes(logo)


PASTE = {"x": "64", "y": "60", "size": "30"}  # on the cabinet's front, in its 128² file's pixels


def post_form(url: str, path: str, fields: dict):
    body, content_type = multipart(fields)
    return request(url + path, "POST", body, {"Content-Type": content_type})


@pytest.fixture(scope="module")
def bundled():
    """``(url, field model)``: the app on the bundled model, and the applications' library on the same
    loaded SavedModel at 64³ (the truth: ``d2im transfer`` and ``d2im paste`` run it)."""
    from d2im_tf.applications.fields import FieldModel
    from d2im_tf.commands.reconstruct import BUNDLED_MODEL

    with served(BUNDLED_MODEL) as (url, service, _):
        yield url, FieldModel(service.reconstructor.with_resolution(64))


def test_transfer_returns_the_library_transfer_and_the_target_alone(bundled):
    from d2im_tf.applications.transfer import transfer_images

    url, fields = bundled
    sent = {"source": ("s.png", SOURCE.read_bytes()), "target": ("t.png", TARGET.read_bytes())}
    status, headers, body = post_form(url, "/api/transfer", {**sent, "where": "front", "resolution": RESOLUTION})
    assert status == 200, body[:300]
    assert headers["content-type"] == "model/gltf-binary" and float(headers["x-server-time"]) > 0
    assert headers["server-timing"].startswith("queue;dur=") and "transfer;dur=" in headers["server-timing"]
    mesh = glb_mesh(body)
    assert len(mesh.faces) == int(headers["x-mesh-faces"]) > 0

    source, target, composition = transfer_images(fields, read_image(SOURCE), read_image(TARGET), "front")
    assert same_mesh(mesh, fields.extract(target, composition))
    result = json.loads(request(url + headers["location"])[2])
    assert result["kind"] == "transfer" and result["resolution"] == 64
    assert list(result["surfaces"]) == ["transfer", "target"]
    for name, image in (("input", target.image), ("source", source.image)):
        status, _, data = request(url + result["images"][name])
        expected = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        assert status == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(data))), expected), name
    assert result["map_scale"] == pytest.approx(float(np.abs(source.maps).max()), rel=1e-5)
    status, _, data = request(url + result["surfaces"]["target"]["files"]["glb"])
    own = glb_mesh(data)
    assert status == 200 and same_mesh(own, fields.extract(target)) and not same_mesh(own, mesh)
    assert request(url + result["surfaces"]["transfer"]["files"]["ply"])[0] == 200
    assert request(url + f"/api/results/{result['id']}/detailed.glb")[0] == 404  # not a surface of a transfer


def test_paste_changes_the_target_mesh_only_near_the_logo(bundled):
    """The pasted mesh is the library's; every vertex that projects more than two grid cells away from
    the logo's rectangle is a vertex of the target's own mesh and the reverse, and near it some are not."""
    from scipy.spatial import cKDTree

    from d2im_tf.applications.paste import logo_paste, place
    from d2im_tf.geometry.camera import project_numpy

    url, fields = bundled
    sent = {"target": ("t.png", TARGET.read_bytes()), "logo": ("logo.png", logo_png())}
    status, headers, body = post_form(url, "/api/paste", {**sent, **PASTE, "resolution": RESOLUTION})
    assert status == 200, body[:300]
    pasted = glb_mesh(body)
    target_pixels, logo_pixels = read_image(TARGET), np.asarray(Image.open(io.BytesIO(logo_png())))
    at, size = (float(PASTE["x"]), float(PASTE["y"])), float(PASTE["size"])
    target, _, composition, picture = logo_paste(fields, target_pixels, logo_pixels, at, size)
    assert same_mesh(pasted, fields.extract(target, composition))
    result = json.loads(request(url + headers["location"])[2])
    assert result["kind"] == "paste" and set(result["images"]) == {"pasted", "logo", "front"}
    status, _, data = request(url + result["images"]["pasted"])
    assert status == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(data))), picture)
    own = glb_mesh(request(url + result["surfaces"]["target"]["files"]["glb"])[2])
    assert same_mesh(own, fields.extract(target))

    rectangle = place(target_pixels.shape, logo_pixels.shape, at, size)
    projection = np.linalg.inv(target.transform) @ target.projection.numpy()[0]  # onto the file's pixels
    cell = 2.0 / 64  # the normalised box [-1, 1]³ at 64³

    def away(vertices):
        xy = project_numpy(vertices, projection)
        steps = [np.abs(project_numpy(vertices + cell * axis, projection) - xy).max() for axis in np.eye(3)]
        margin = 2 * max(steps) + 1
        low = np.array([rectangle.left, rectangle.top]) - margin
        high = np.array([rectangle.left + rectangle.width, rectangle.top + rectangle.height]) + margin
        return ~np.all((xy >= low) & (xy <= high), axis=1)

    for one, other in ((pasted, own), (own, pasted)):
        far = one.vertices[away(one.vertices)]
        assert len(far) > 0.3 * len(one.vertices)  # the rectangle hides the back too: every depth projects into it
        assert cKDTree(other.vertices).query(far)[0].max() < 1e-6
    assert cKDTree(own.vertices).query(pasted.vertices)[0].max() > 1e-3  # the logo changed the mesh


def application_bad_requests():
    """(name, path, fields, status, words in the message) for each bad input of /api/transfer, /api/paste."""
    source, target, logo = SOURCE.read_bytes(), TARGET.read_bytes(), logo_png()
    corrupt, bomb = target[:200] + bytes(range(256)) * 8, huge_png(20000, 20000)
    transfer = {"source": ("s.png", source), "target": ("t.png", target)}
    paste = {"target": ("t.png", target), "logo": ("l.png", logo), **PASTE}
    return [
        ("transfer: no target", "/api/transfer", {"source": ("s.png", source)}, 400, "'target' is missing"),
        ("transfer: corrupt source", "/api/transfer", {**transfer, "source": ("s.png", corrupt)}, 400, "'source': not"),
        ("transfer: not an image", "/api/transfer", {**transfer, "target": ("t.png", b"x" * 99)}, 415, "'target': not"),
        ("transfer: bad where", "/api/transfer", {**transfer, "where": "top"}, 400, "front, back, both"),
        ("transfer: unknown field", "/api/transfer", {**transfer, "logo": "x"}, 400, "unknown field 'logo'"),
        ("transfer: 20000² PNG", "/api/transfer", {**transfer, "source": ("b.png", bomb)}, 413, "'source': image too"),
        ("paste: no logo", "/api/paste", {**paste, "logo": "text"}, 400, "'logo' is text, not a file"),
        ("paste: empty logo", "/api/paste", {**paste, "logo": ("l.png", b"")}, 400, "'logo': the image is empty"),
        ("paste: no x", "/api/paste", {k: v for k, v in paste.items() if k != "x"}, 400, "'x' is missing"),
        ("paste: x not a number", "/api/paste", {**paste, "x": "left"}, 400, "finite number"),
        ("paste: logo larger", "/api/paste", {**paste, "logo": ("l.png", logo_png(200)), "size": ""}, 400, "larger"),
        ("paste: at outside", "/api/paste", {**paste, "x": "140"}, 400, "outside the target image (128×128"),
        ("paste: over the edge", "/api/paste", {**paste, "x": "5"}, 400, "reaches outside"),
        ("paste: size 0", "/api/paste", {**paste, "size": "0"}, 400, "at least 1 pixel"),
        ("paste: bad blend", "/api/paste", {**paste, "blend": "mix"}, 400, "add, replace"),
        ("paste: three files", "/api/paste", {**paste, "extra": ("e.png", logo)}, 400, "malformed multipart"),
    ]


@pytest.mark.parametrize("case", application_bad_requests(), ids=lambda case: case[0])
def test_bad_application_input_gets_one_line(bundled, case):
    url, _ = bundled
    _, path, fields, status, words = case
    got, headers, data = post_form(url, path, fields)
    assert got == status, data[:300]
    message = json.loads(data)["error"]
    assert headers["content-type"] == "application/json" and words in message, message
    assert "\n" not in message and len(message) < 250 and str(ROOT) not in message


def test_after_every_bad_application_input_a_good_one_still_works(bundled):
    url, _ = bundled
    for _, path, fields, _, _ in application_bad_requests():
        post_form(url, path, fields)
    for path in ("/api/transfer", "/api/paste"):
        assert request(url + path, "POST", b"{}", {"Content-Type": "application/json"})[0] == 415
        assert request(url + path)[0] == 405
    status, _, body = request(f"{url}/api/health")
    assert status == 200 and json.loads(body)["waiting"] == 0 and json.loads(body)["applications"] is True
    fields = {"target": ("t.png", TARGET.read_bytes()), "logo": ("l.png", logo_png()), **PASTE}
    status, _, body = post_form(url, "/api/paste", {**fields, "resolution": RESOLUTION})
    assert status == 200 and len(glb_mesh(body).faces) > 0


def test_a_model_in_the_world_frame_serves_reconstructions_but_not_the_applications(tiny_model, tmp_path):
    """Weights imported from the authors' release cannot run transfer or paste: 501 with one line
    naming the model, not its path; reconstruct still works and the health says so."""
    import shutil

    folder = tmp_path / "imported" / "1"
    shutil.copytree(tiny_model, folder)
    info = json.loads((folder / "assets.extra" / "d2im.json").read_text())
    (folder / "assets.extra" / "d2im.json").write_text(json.dumps({**info, "frame": "world"}))
    with served(folder) as (url, _, _):
        assert json.loads(request(f"{url}/api/health")[2])["applications"] is False
        example = EXAMPLE.read_bytes()
        fields = {"target": ("t.png", example), "logo": ("l.png", logo_png()), **PASTE}
        status, _, body = post_form(url, "/api/paste", fields)
        message = json.loads(body)["error"]
        assert status == 501 and "(imported) cannot run transfer or paste" in message and str(tmp_path) not in message
        assert post_image(url, example, resolution=RESOLUTION)[0] == 200
