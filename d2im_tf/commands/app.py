"""``d2im app``: a local web page and HTTP API (image → 3D) on an exported SavedModel.

Loads the model once, makes one reconstruction to warm it up, prints the URL and serves until
Ctrl-C (see :mod:`d2im_tf.app` and docs/app.md). Binds 127.0.0.1 unless ``--host`` says otherwise,
with a warning then: the app has no authentication.
"""

from __future__ import annotations

from d2im_tf.commands.reconstruct import model_argument


def configure(parser) -> None:
    model_argument(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for all, with a warning)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="reconstructions run at once (default 1; each uses every core TensorFlow is given)",
    )
    parser.add_argument(
        "--queue",
        type=int,
        default=16,
        help="requests that may wait for a worker; one more gets 503 at once (default 16)",
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=60.0,
        help="seconds a request may wait for a worker before it gets 503 (default 60)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=16.0,
        help="largest request body in MB (2^20 bytes), image included (default 16)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        help="largest image in pixels, width × height, checked before decoding (default 4096²)",
    )
    parser.add_argument(
        "--keep-results",
        type=int,
        default=8,
        help="reconstructions kept for the page's later requests (maps, the other surface, "
        "downloads); the oldest is dropped (default 8)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")


def run(args) -> int:
    from d2im_tf.errors import UserError

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    for name, value in (
        ("--workers", args.workers),
        ("--max-pixels", args.max_pixels),
        ("--keep-results", args.keep_results),
    ):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if args.queue < 0 or args.queue_timeout <= 0 or args.max_upload_mb <= 0:
        raise UserError("--queue must be ≥ 0, --queue-timeout and --max-upload-mb > 0")

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise UserError(
            f"d2im app needs the 'app' extra ({error.name} is missing): pip install 'd2im_tf[app]'"
        ) from None
    from d2im_tf.app.server import bind, build_app, serve
    from d2im_tf.app.service import Service
    from d2im_tf.app.validation import MEGABYTE, Limits
    from d2im_tf.app.workers import WorkerPool

    try:  # before the slow model load: a port in use is reported at once
        bind(args.host, args.port).close()
    except OSError as error:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({error.strerror or error})") from None
    service = Service(args.model, args.keep_results)
    print(f"model {service.model_name} loaded; warm-up took {service.warm_up():.1f} s", flush=True)
    pool = WorkerPool(args.workers, args.queue, args.queue_timeout)
    limits = Limits(max_bytes=int(args.max_upload_mb * MEGABYTE), max_pixels=args.max_pixels)
    serve(build_app(service, pool, limits), args.host, args.port, args.access_log)
    return 0
