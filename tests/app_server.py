"""Shared by the app's API and browser tests: a served app on the tiny random-weight export (with a
camera network) at a free port on 127.0.0.1, and inputs the tests send."""

import io
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from d2im_tf.app.client import multipart, post_image, request  # noqa: F401 (the tests' client)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EXAMPLE = EXAMPLES / "03001627_syn00005.png"


@contextmanager
def served(model_path, workers: int = 1, max_waiting: int = 8, wait_timeout: float = 60.0, limits=None):
    """``(url, service, pool)`` of an app serving ``model_path`` in a thread, stopped on exit."""
    from d2im_tf.app.server import ServerThread, build_app
    from d2im_tf.app.service import Service
    from d2im_tf.app.workers import WorkerPool

    service = Service(model_path)
    pool = WorkerPool(workers, max_waiting, wait_timeout)
    server = ServerThread(build_app(service, pool, limits, EXAMPLES))
    try:
        yield server.url, service, pool
    finally:
        server.stop()
        pool.shutdown()


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG of ``width × height`` written chunk by chunk (PNG spec: signature, IHDR,
    IDAT of zlib-compressed scanlines, each a filter byte 0 and ⌈width/8⌉ bytes, IEND): 20000² pixels
    compress to ~50 kB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grey, deflate, no filter/interlace
    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
