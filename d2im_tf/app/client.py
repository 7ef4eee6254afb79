"""A small client of the app's HTTP API on the standard library alone (the benchmark's and the tests';
any HTTP client does): ``post_image(url, data, resolution="128")`` → ``(status, headers, body)``."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

BOUNDARY = "d2im-client-boundary-7f3a"


def multipart(fields: dict) -> tuple[bytes, str]:
    """A multipart/form-data body (RFC 7578) and its Content-Type; a field's value is text, or
    ``(filename, bytes)`` for a file."""
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data = value
            head = (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n"
            )
        else:
            head, data = f'Content-Disposition: form-data; name="{name}"\r\n', str(value).encode()
        parts.append(f"--{BOUNDARY}\r\n{head}\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None, timeout: float = 300
) -> tuple[int, dict, bytes]:
    """``(status, headers with lower-case names, body)`` of one request; no exception for 4xx/5xx."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def post_image(url: str, data: bytes, name: str = "image.png", **options) -> tuple[int, dict, bytes]:
    """``POST {url}/api/reconstruct`` with ``data`` as the field ``image`` and ``options`` (``resolution``,
    ``surface``, ``format``, ``completion``, ``gaps``, ``cavities``) as text fields."""
    body, content_type = multipart({"image": (name, data), **options})
    return request(f"{url}/api/reconstruct", "POST", body, {"Content-Type": content_type})
