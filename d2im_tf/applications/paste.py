"""Paste-n-reconstruct (paper §4.4, Figure 8): a logo dropped onto an image, reconstructed in relief.

The target image gives f_B, its own maps and the front/back test; it is prepared as for its own
reconstruction (matted, re-framed, its predicted pose fitted to its outline). The logo goes through
the encoder and detail decoder on its own (an image of its own, on white, padded to a square); only
its *front* map is used, read through the camera of the place it was pasted: the target's projection
followed by the 2-D affine map from the prepared target's pixels to the prepared logo image's
(:func:`logo_projection`, through both files' pixels), so a point seen at pixel x of the pasted
rectangle reads the logo's map where the logo image shows that pixel. Only points whose projection
falls on a pixel of the logo's foreground (alpha ≥ ½, or not white for a logo without alpha) are
changed: their front displacement becomes the target's plus the logo's (``add``, the paper's sum of
all maps) or the logo's (``replace``). Everywhere else the field is bit for bit the target's own.

Placement, in the target file's pixels: ``at`` is the logo's centre, ``size`` its longer side (default
its own); the logo must lie wholly inside the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from PIL import Image

from d2im_tf.applications.fields import Composition, EncodedImage, FieldModel
from d2im_tf.data.disn_format import on_white
from d2im_tf.data.framing import square_transform
from d2im_tf.errors import UserError
from d2im_tf.geometry.camera import project_numpy
from d2im_tf.inference.reconstruct import prepare_image

BLENDS = ("add", "replace")
WHITE_LEVEL = 240  # a logo without alpha: pixels with every channel at or above this are background


def rgb_on_white(pixels: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` / ``[H, W, 1|3|4]`` → float64 RGB ``[H, W, 3]`` in [0, 255], alpha composited on white."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] in (1, 2):
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=-1), pixels[..., 1:]], axis=-1)
    return on_white(pixels) if pixels.shape[-1] == 4 else pixels[..., :3].astype(np.float64)


def foreground(pixels: np.ndarray) -> np.ndarray:
    """The logo's foreground ``[H, W]`` bool: alpha ≥ 128 if it has alpha, else not white."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] in (2, 4):
        return pixels[..., -1] >= 128
    return np.any(rgb_on_white(pixels) < WHITE_LEVEL, axis=-1)


@dataclass(frozen=True)
class Placement:
    """Where the logo lands in the target file: the integer rectangle ``left, top, width, height``."""

    left: int
    top: int
    width: int
    height: int


def place(target_shape, logo_shape, at, size: float | None = None) -> Placement:
    """The logo's rectangle centred on ``at`` (x, y) with its longer side ``size`` (default its own), in
    the target file's pixels; :class:`UserError` if ``at`` is outside the image or the logo does not fit
    (messages in the words of both ``d2im paste`` and the app's ``POST /api/paste``: centre and size)."""
    height, width = target_shape[:2]
    logo_h, logo_w = logo_shape[:2]
    x, y = (float(v) for v in at)
    if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < width and 0 <= y < height):
        raise UserError(f"the logo's centre {x:g}, {y:g} is outside the target image ({width}×{height} pixels)")
    longer = max(logo_h, logo_w)
    size = float(longer if size is None else size)
    if not np.isfinite(size) or size < 1:
        raise UserError(f"the logo's size must be at least 1 pixel, got {size:g}")
    scaled_w, scaled_h = max(1, round(logo_w * size / longer)), max(1, round(logo_h * size / longer))
    if scaled_w > width or scaled_h > height:
        raise UserError(
            f"the logo ({scaled_w}×{scaled_h} pixels at size {size:g}) is larger than the target "
            f"image ({width}×{height}); give a smaller size"
        )
    left, top = round(x - scaled_w / 2), round(y - scaled_h / 2)
    if left < 0 or top < 0 or left + scaled_w > width or top + scaled_h > height:
        raise UserError(
            f"the logo ({scaled_w}×{scaled_h} pixels centred at {x:g}, {y:g}) reaches outside the "
            f"target image ({width}×{height}); move its centre or give a smaller size"
        )
    return Placement(left, top, scaled_w, scaled_h)


def pasted_image(target: np.ndarray, logo: np.ndarray, placement: Placement) -> tuple[np.ndarray, np.ndarray]:
    """The target on white with the logo's foreground pasted in, uint8 ``[H, W, 3]``, and the pasted
    pixels ``[H, W]`` bool (the mask the field is changed under)."""
    size = (placement.width, placement.height)
    logo_rgb = np.asarray(Image.fromarray(np.round(rgb_on_white(logo)).astype(np.uint8)).resize(size, Image.BILINEAR))
    logo_mask = np.asarray(Image.fromarray(foreground(logo)).resize(size, Image.NEAREST))
    image = np.round(rgb_on_white(target)).astype(np.uint8)
    mask = np.zeros(image.shape[:2], bool)
    window = (
        slice(placement.top, placement.top + placement.height),
        slice(placement.left, placement.left + placement.width),
    )
    mask[window] = logo_mask
    image[window][logo_mask] = logo_rgb[logo_mask]
    return image, mask


def logo_projection(target_projection, target_transform, logo_transform, logo_shape, placement: Placement):
    """The logo image's camera ``[1, 3, 4]``: the target's projection (pixels of the prepared target), back
    to the target file's pixels (``target_transform`` ``[3, 3]``, file → prepared), onto the logo file's
    pixels by the placement, and to the prepared logo's (``logo_transform``)."""
    logo_h, logo_w = logo_shape[:2]
    sx, sy = logo_w / placement.width, logo_h / placement.height  # logo-file pixels per target-file pixel
    placed = np.array([[sx, 0.0, -placement.left * sx], [0.0, sy, -placement.top * sy], [0.0, 0.0, 1.0]])
    affine = np.asarray(logo_transform, np.float64) @ placed @ np.linalg.inv(target_transform)
    return (affine @ np.asarray(target_projection, np.float64).reshape(3, 4))[None].astype(np.float32)


class LogoPaste(Composition):
    """The logo's front displacement under its pasted foreground (module docstring)."""

    def __init__(
        self,
        model: FieldModel,
        target: EncodedImage,
        logo: EncodedImage,
        mask: np.ndarray,
        projection: np.ndarray,
        blend: str = "add",
    ):
        if blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
        self.model, self.target, self.logo, self.blend = model, target, logo, blend
        self.mask = np.asarray(mask, bool)  # [H, W] in the target file's pixels
        self.projection = projection  # [1, 3, 4]: the logo's camera
        self.to_file = np.linalg.inv(target.transform)  # [3, 3]: the prepared target's pixels → the file's
        self.maps = [logo.maps]

    def covered(self, points: np.ndarray) -> np.ndarray:
        """Which points ``[N, 3]`` project onto a pasted pixel, ``[N]`` bool."""
        uv = project_numpy(points, self.target.projection.numpy())  # prepared target's pixels
        file_xy = np.floor(uv @ self.to_file[:2, :2].T + self.to_file[:2, 2])
        height, width = self.mask.shape
        inside = (file_xy[:, 0] >= 0) & (file_xy[:, 0] < width) & (file_xy[:, 1] >= 0) & (file_xy[:, 1] < height)
        result = np.zeros(len(points), bool)
        cols, rows = file_xy[inside, 0].astype(int), file_xy[inside, 1].astype(int)
        result[inside] = self.mask[rows, cols]
        return result

    def displacements(self, points: np.ndarray, own: np.ndarray) -> np.ndarray:
        out = own.copy()
        covered = self.covered(points)
        if covered.any():
            _, theirs = self.model.bounds(self.logo, points[covered], self.projection)
            front = theirs[:, 0] + (own[covered, 0] if self.blend == "add" else 0.0)
            out[covered, 0] = front
        return out


def logo_paste(
    model: FieldModel,
    target_pixels: np.ndarray,
    logo_pixels: np.ndarray,
    at,
    size=None,
    blend: str = "add",
    camera_row=None,
    norm_params=None,
):
    """Encode the target and the logo and build the paste: ``(target, logo, composition, pasted image)``.
    The target is encoded as it is (it gives f_B and its own maps); the pasted image is what a user sees."""
    placement = place(target_pixels.shape, logo_pixels.shape, at, size)
    image, mask = pasted_image(target_pixels, logo_pixels, placement)
    target = model.encode(target_pixels, camera_row, norm_params)
    logo = _encode_logo(model, np.round(rgb_on_white(logo_pixels)).astype(np.uint8), target)
    projection = logo_projection(
        target.projection.numpy(), target.transform, logo.transform, logo_pixels.shape, placement
    )
    return target, logo, LogoPaste(model, target, logo, mask, projection, blend), image


def _encode_logo(model: FieldModel, pixels: np.ndarray, target: EncodedImage) -> EncodedImage:
    """The logo (uint8 RGB on white) through ``encode`` only: its camera is the pasted place's, given to
    :class:`LogoPaste` separately, so the target's stands in the record."""
    image = prepare_image(pixels, model.image_size, "white")
    encoding = model.signatures["encode"](image=tf.constant(image[None]))
    transform = square_transform(*pixels.shape[:2], model.image_size)
    return EncodedImage(image, encoding, target.projection, target.view, encoding["maps"][0].numpy(), transform)
