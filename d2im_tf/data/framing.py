"""Where the object sits in an image, and re-framing it to a fixed size: one home for both the
reconstruction's image preparation and the training pipeline's ``data.framing`` option.

*Foreground*: an RGBA image's alpha (> 0.5), else the pixels with any channel darker than
:data:`WHITE_THRESHOLD` (240 of 255: JPEG noise around a white background stays below it; a
near-white object part above it is lost, so give such objects an alpha channel or a photo's matte).

*Object size*: the longer side of the foreground's bounding box as a share of the image's side
(the box in continuous pixel coordinates, pixel (0, 0)'s top-left corner at the origin, as
docs/conventions.md, "Camera").

*Re-framing* (:func:`reframe`) crops a square around the box's centre whose side makes the box's longer
side ``object_size`` of it, and resizes that square to ``size`` pixels (white where it leaves the
image). It is an affine map of pixel coordinates, ``u' = s·u + o``, returned as a 3×3 matrix A, so a
projection P to the input's pixels becomes ``A·P`` to the re-framed image's: points still project onto
the same image content.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

WHITE_THRESHOLD = 240  # a channel below this (of 255) is foreground in an image without alpha
WHITE = 255


def foreground_mask(pixels: np.ndarray) -> np.ndarray:
    """bool ``[H, W]`` foreground of a uint8 image ``[H, W]`` or ``[H, W, 1|2|3|4]`` (module docstring)."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] in (2, 4):  # grey + alpha, RGBA
        return pixels[..., -1] > 127
    return pixels.min(axis=-1) < WHITE_THRESHOLD


def object_box(mask: np.ndarray) -> np.ndarray | None:
    """``[x0, y0, x1, y1]`` (continuous pixel coordinates) of the foreground ``mask [H, W]``; None if empty."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return None
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)


def object_size(mask: np.ndarray) -> float:
    """The box's longer side over the image's longer side (0 for an empty mask)."""
    box = object_box(mask)
    return 0.0 if box is None else float(max(box[2] - box[0], box[3] - box[1]) / max(mask.shape))


def object_offset(mask: np.ndarray) -> float:
    """How far the box's centre is from the image's centre, the larger axis as a share of the side."""
    box = object_box(mask)
    if box is None:
        return 0.0
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    return float(np.abs(centre - np.array(mask.shape[::-1]) / 2).max() / max(mask.shape))


def crop_transform(box, object_fraction: float, size: int) -> np.ndarray:
    """The 3×3 affine A of input pixels → re-framed pixels: the square centred on ``box``'s centre with
    side ``max(box side) / object_fraction`` becomes ``[0, size]²``."""
    x0, y0, x1, y1 = np.asarray(box, float)
    side = max(x1 - x0, y1 - y0) / object_fraction
    scale = size / side
    left, top = (x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2
    return np.array([[scale, 0.0, -scale * left], [0.0, scale, -scale * top], [0.0, 0.0, 1.0]])


def flip_transform(width: float) -> np.ndarray:
    """``[3, 3]``: the affine of pixel coordinates ``u → width − u`` (a left-right flip of an image
    ``width`` pixels wide, pixel corners at integers), its own inverse."""
    return np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def warp(pixels: np.ndarray, transform: np.ndarray, size: int, fill=WHITE, resample=Image.LANCZOS) -> np.ndarray:
    """``pixels [H, W, C]`` (uint8 or float32) mapped by the affine ``transform`` (input → output pixel
    coordinates, scale and shift only, or a left-right flip of one) into ``[size, size, C]``; ``fill``
    where the input has no pixels.

    The input is padded with ``fill`` so that the source square lies inside it, then the square is
    resized with Pillow's box-aware resampling (exact continuous coordinates, antialiased)."""
    pixels = np.asarray(pixels)
    if transform[0, 0] < 0:  # flipped left-right: the unflipped output, flipped
        return warp(pixels, flip_transform(size) @ transform, size, fill, resample)[:, ::-1]
    scale, shift = transform[0, 0], transform[:2, 2]  # [2] (x, y)
    left, top = -shift / scale  # the output square's top-left corner in input pixels
    side = size / scale
    pad = int(np.ceil(max(0.0, -left, -top, left + side - pixels.shape[1], top + side - pixels.shape[0]))) + 2
    padded = np.pad(pixels, [(pad, pad), (pad, pad)] + [(0, 0)] * (pixels.ndim - 2), constant_values=fill)
    box = (left + pad, top + pad, left + pad + side, top + pad + side)
    channels = [padded] if padded.ndim == 2 else [padded[..., c] for c in range(padded.shape[-1])]
    out = []
    for channel in channels:  # per channel: Pillow's float mode ("F") keeps float inputs exact
        image = Image.fromarray(channel.astype(np.float32), mode="F")
        out.append(np.asarray(image.resize((size, size), resample, box=box)))
    result = np.stack(out, axis=-1) if padded.ndim == 3 else out[0]
    if pixels.dtype == np.uint8:
        return np.clip(np.round(result), 0, 255).astype(np.uint8)
    return result.astype(pixels.dtype)


def reframe(
    pixels: np.ndarray, mask: np.ndarray, object_fraction: float, size: int, fill=WHITE, resample=Image.LANCZOS
) -> tuple[np.ndarray, np.ndarray]:
    """``(image [size, size, C], A [3, 3])``: ``pixels`` cropped around ``mask``'s object so that the
    object's box spans ``object_fraction`` of the side (module docstring); an empty mask keeps the
    whole image (padded to a centred square)."""
    box = object_box(mask)
    if box is None:
        height, width = mask.shape
        side = max(height, width)
        box = np.array([(width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2])
        object_fraction = 1.0
    transform = crop_transform(box, object_fraction, size)
    return warp(pixels, transform, size, fill, resample), transform


def square_transform(height: int, width: int, size: int) -> np.ndarray:
    """The 3×3 affine of padding ``[H, W]`` to a centred square (integer offsets, as the reconstruction's
    image preparation) and resizing that to ``size`` pixels: input → prepared pixels."""
    side = max(height, width)
    scale = size / side
    left, top = (side - width) // 2, (side - height) // 2
    return np.array([[scale, 0.0, scale * left], [0.0, scale, scale * top], [0.0, 0.0, 1.0]])
