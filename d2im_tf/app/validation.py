"""Reading and checking what a client sends: the uploads (size in bytes, image format, size in pixels,
decoded before nothing else) and the options of ``/api/reconstruct``, ``/api/transfer`` and
``/api/paste``; every problem is an :class:`ApiError` with one line for the client and a 4xx status.

An image's dimensions are read from its header before its pixels are decoded, so a decompression bomb
(a small file that decodes to billions of pixels) is refused at the cost of reading its header.
Messages never name a server path or repeat the client's bytes.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

# The conversions of d2im_tf.data.disn_format.read_image, which reads files by path (its errors name them).
from d2im_tf.applications.paste import BLENDS, place
from d2im_tf.applications.transfer import WHERE
from d2im_tf.data.disn_format import to_8bit
from d2im_tf.errors import UserError
from d2im_tf.inference.reconstruct import SURFACES  # noqa: F401 (the options' values; re-exported)

FORMATS = ("PNG", "JPEG", "WEBP")  # what Pillow may decode from an upload
RESOLUTIONS = (64, 128, 256)
MESH_FORMATS = {"glb": "model/gltf-binary", "obj": "model/obj", "ply": "application/ply"}
MEGABYTE = 1 << 20


class ApiError(Exception):
    """A request the server refuses: ``status`` (4xx or 503) and a one-line ``message`` for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Limits:
    """What one request may send: ``max_bytes`` of body (the image and the multipart framing) and
    ``max_pixels`` of image (width × height)."""

    max_bytes: int = 16 * MEGABYTE
    max_pixels: int = 4096 * 4096


def check_length(content_length: str | None, limits: Limits) -> None:
    """413 if the declared body length is over the limit (before a byte of it is read)."""
    if content_length is None:
        return
    try:
        length = int(content_length)
    except ValueError:
        raise ApiError(400, f"Content-Length is not a number: {content_length[:40]!r}") from None
    if length > limits.max_bytes:
        raise ApiError(413, too_large_message(length, limits))


def too_large_message(length: int, limits: Limits) -> str:
    return (
        f"upload too large: {length / MEGABYTE:.1f} MB; the limit is {limits.max_bytes / MEGABYTE:g} MB "
        f"({limits.max_bytes} bytes)"
    )


def decode_image(data: bytes, limits: Limits) -> np.ndarray:
    """Upload bytes → uint8 ``[H, W, 3]`` RGB or ``[H, W, 4]`` RGBA (as :func:`d2im_tf.data.disn_format.read_image`
    reads files); :class:`ApiError` if empty, not a PNG/JPEG/WebP, too many pixels or unreadable."""
    if not data:
        raise ApiError(400, "the image is empty (0 bytes)")
    pixel_limit = f"the limit is {limits.max_pixels} pixels ({_square(limits.max_pixels)})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is ours
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except UnidentifiedImageError:
        raise ApiError(415, "not an image this server reads (PNG, JPEG or WebP expected)") from None
    except Image.DecompressionBombError:  # Pillow's own refusal, past twice its MAX_IMAGE_PIXELS
        raise ApiError(413, f"image too large: over {2 * Image.MAX_IMAGE_PIXELS} pixels; {pixel_limit}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ApiError(400, f"not a readable image ({_one_line(error)})") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ApiError(413, f"image too large: {width}×{height} pixels; {pixel_limit}")
    try:
        image.load()
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # as read_image reads such files
            image = to_8bit(image)
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
        return np.asarray(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ApiError(400, f"not a readable {image.format} image ({_one_line(error)})") from None
    finally:
        image.close()


def _square(pixels: int) -> str:
    side = int(pixels**0.5)
    return f"{side}×{side}" if side * side == pixels else f"{pixels} pixels"


def _one_line(error: BaseException) -> str:
    """An exception as a short line without paths (Pillow's messages about bytes name none)."""
    text = " ".join(str(error).split())[:160]
    return text or error.__class__.__name__


def choice(form, name: str, allowed, default):
    """Form field ``name`` as one of ``allowed`` (compared as text), ``default`` when absent."""
    value = form.get(name)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"field {name!r} must be text, not a file")
    for option in allowed:
        if value.strip() == str(option):
            return option
    raise ApiError(400, f"field {name!r} must be one of {', '.join(map(str, allowed))}; got {value[:40]!r}")


def number(form, name: str, required: bool = True) -> float | None:
    """Form field ``name`` as a finite number (None when absent and not ``required``)."""
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"the field {name!r} is missing; send it as a number")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"field {name!r} must be text, not a file")
    try:
        parsed = float(value.strip())
    except ValueError:
        parsed = float("nan")
    if not np.isfinite(parsed):
        raise ApiError(400, f"field {name!r} must be a finite number; got {value[:40]!r}")
    return parsed


def check_fields(form, files: tuple[str, ...], options: tuple[str, ...]) -> None:
    """400 unless every field of ``files`` is a file, and no field is outside ``files`` and ``options``."""
    for name in files:
        upload = form.get(name)
        if upload is None or isinstance(upload, str):
            others = ", ".join(sorted({repr(key[:40]) for key in form.keys()} - {repr(name)})) or "none"
            what = "is text, not a file" if isinstance(upload, str) else f"is missing (fields sent: {others})"
            wanted = " and ".join(f"{file!r}" for file in files)
            noun = "the image file as" if len(files) == 1 else "the image files as"
            raise ApiError(400, f"the multipart field {name!r} {what}; send {noun} {wanted}")
    known = set(files) | set(options)
    unknown = sorted(set(form.keys()) - known)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0][:40]!r}; the fields are {', '.join(sorted(known))}")


async def read_image(form, name: str, limits: Limits, named: bool = False) -> np.ndarray:
    """The decoded upload of file field ``name``; ``named``: its errors start with the field's name (a
    request with several images)."""
    upload = form.get(name)
    try:
        return decode_image(await upload.read(), limits)
    except ApiError as error:
        if not named:
            raise
        raise ApiError(error.status, f"{name!r}: {error.message}") from None


@dataclass(frozen=True)
class ReconstructRequest:
    """A checked ``POST /api/reconstruct``: the decoded image and its options."""

    pixels: np.ndarray
    resolution: int
    surface: str
    mesh_format: str
    completion: bool = False
    fill_cavities: bool = True
    bridge_gaps: bool = True


async def read_form(form, limits: Limits) -> ReconstructRequest:
    """The checked request from a parsed multipart form (Starlette's ``FormData``)."""
    check_fields(form, ("image",), ("resolution", "surface", "format", "completion", "cavities", "gaps"))
    resolution = choice(form, "resolution", RESOLUTIONS, 128)
    surface = choice(form, "surface", SURFACES, "detailed")
    mesh_format = choice(form, "format", tuple(MESH_FORMATS), "glb")
    completion = choice(form, "completion", ("off", "on"), "off") == "on"
    fill_cavities = choice(form, "cavities", ("fill", "keep"), "fill") == "fill"
    bridge_gaps = choice(form, "gaps", ("bridge", "keep"), "bridge") == "bridge"
    pixels = await read_image(form, "image", limits)
    return ReconstructRequest(pixels, resolution, surface, mesh_format, completion, fill_cavities, bridge_gaps)


@dataclass(frozen=True)
class TransferRequest:
    """A checked ``POST /api/transfer``: the source's details onto the target's coarse shape."""

    source: np.ndarray
    target: np.ndarray
    where: str
    resolution: int
    mesh_format: str


async def read_transfer_form(form, limits: Limits) -> TransferRequest:
    """The checked detail transfer from a parsed multipart form: files ``source`` and ``target``,
    optional ``where`` (front, back, both), ``resolution`` and ``format``."""
    check_fields(form, ("source", "target"), ("where", "resolution", "format"))
    where = choice(form, "where", tuple(WHERE), "both")
    resolution = choice(form, "resolution", RESOLUTIONS, 128)
    mesh_format = choice(form, "format", tuple(MESH_FORMATS), "glb")
    source = await read_image(form, "source", limits, named=True)
    target = await read_image(form, "target", limits, named=True)
    return TransferRequest(source, target, where, resolution, mesh_format)


@dataclass(frozen=True)
class PasteRequest:
    """A checked ``POST /api/paste``: the logo's centre ``at`` (x, y) and longer side ``size`` (None: its
    own) in the target's pixels, as ``d2im paste``'s ``--at`` and ``--size``."""

    target: np.ndarray
    logo: np.ndarray
    at: tuple[float, float]
    size: float | None
    blend: str
    resolution: int
    mesh_format: str


async def read_paste_form(form, limits: Limits) -> PasteRequest:
    """The checked paste from a parsed multipart form: files ``target`` and ``logo``, numbers ``x``, ``y``
    and optional ``size``, optional ``blend`` (add, replace), ``resolution`` and ``format``; the logo
    must lie wholly inside the target (:func:`d2im_tf.applications.paste.place`)."""
    check_fields(form, ("target", "logo"), ("x", "y", "size", "blend", "resolution", "format"))
    at = (number(form, "x"), number(form, "y"))
    size = number(form, "size", required=False)
    blend = choice(form, "blend", BLENDS, "add")
    resolution = choice(form, "resolution", RESOLUTIONS, 128)
    mesh_format = choice(form, "format", tuple(MESH_FORMATS), "glb")
    target = await read_image(form, "target", limits, named=True)
    logo = await read_image(form, "logo", limits, named=True)
    try:
        place(target.shape, logo.shape, at, size)  # here, not in a worker: a bad placement is the client's
    except UserError as error:
        raise ApiError(400, str(error)) from None
    return PasteRequest(target, logo, at, size, blend, resolution, mesh_format)
