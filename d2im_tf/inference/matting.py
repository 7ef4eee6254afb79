"""The object's foreground in an image of any background, offline: alpha, white, or GrabCut.

:func:`matte` gives an RGBA image whose alpha is the object (the function the CLI and the web app
call on an image array):

- an image with an alpha channel (RGBA, grey + alpha) keeps it;
- an image on a plain white background (at least :data:`WHITE_BORDER` of a ring of pixels along its
  border is white) is thresholded (:func:`d2im_tf.data.framing.foreground_mask`);
- anything else (a photo, a render on a textured background) is matted with OpenCV's GrabCut
  (Rother et al. 2004; colour mixture models of foreground and background plus a graph cut), started
  from the border ring as certain background, the interior as probable foreground, and interior pixels
  whose colour is within :data:`BACKGROUND_COLOUR_DISTANCE` of one of the border's colour clusters
  as probable background. The largest connected foreground region and the regions at least
  :data:`KEEP_FRACTION` of it are kept. The object should not touch the image's border.

No model and no download: OpenCV (``opencv-python-headless``) runs GrabCut on the CPU, ~0.1 s at 224².
"""

from __future__ import annotations

import numpy as np

from d2im_tf.data import framing

WHITE_BORDER = 0.9  # share of the border ring that must be white for "a plain white background"
BORDER_RING = 1 / 32  # ring width, share of the image's side (at least 2 pixels)
ITERATIONS = 6
BORDER_CLUSTERS = 8  # k-means colour clusters of the border ring
BACKGROUND_COLOUR_DISTANCE = 8.0  # Lab units: interior pixels this close to a border colour start as background
KEEP_FRACTION = 0.05  # foreground regions smaller than this share of the largest one are dropped


def _ring(height: int, width: int) -> np.ndarray:
    """bool ``[H, W]``: the border ring."""
    width_px = max(2, int(round(BORDER_RING * max(height, width))))
    ring = np.ones((height, width), bool)
    ring[width_px:-width_px, width_px:-width_px] = False
    return ring


def white_background(rgb: np.ndarray) -> bool:
    """Whether uint8 ``rgb [H, W, 3]`` shows its object on a plain white background."""
    white = rgb.min(axis=-1) >= framing.WHITE_THRESHOLD
    return bool(white[_ring(*white.shape)].mean() >= WHITE_BORDER)


def grabcut_mask(rgb: np.ndarray, iterations: int = ITERATIONS) -> np.ndarray:
    """bool ``[H, W]`` foreground of uint8 ``rgb [H, W, 3]`` by GrabCut (module docstring)."""
    import cv2

    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    height, width = rgb.shape[:2]
    ring = _ring(height, width)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)  # [H, W, 3]
    border = lab[ring]  # [N, 3]
    clusters = min(BORDER_CLUSTERS, len(border))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, _, centres = cv2.kmeans(border, clusters, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    distance = np.min(np.linalg.norm(lab[..., None, :] - centres[None, None], axis=-1), axis=-1)  # [H, W]
    labels = np.full((height, width), cv2.GC_PR_FGD, np.uint8)
    labels[distance < BACKGROUND_COLOUR_DISTANCE] = cv2.GC_PR_BGD
    labels[ring] = cv2.GC_BGD
    background_model, foreground_model = np.zeros((1, 65)), np.zeros((1, 65))
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    cv2.setRNGSeed(0)
    cv2.grabCut(bgr, labels, None, background_model, foreground_model, iterations, cv2.GC_INIT_WITH_MASK)
    mask = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return _main_regions(mask)


def _main_regions(mask: np.ndarray) -> np.ndarray:
    """``mask`` without the connected regions smaller than :data:`KEEP_FRACTION` of the largest."""
    import cv2

    count, regions, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]  # [count - 1], label 0 is the background
    keep = np.flatnonzero(areas >= KEEP_FRACTION * areas.max()) + 1
    return np.isin(regions, keep)


def was_matted(pixels: np.ndarray, matting: bool = True) -> bool:
    """Whether :func:`matte` runs GrabCut on ``pixels``: matting on, no alpha, a background not plain white."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if not matting or pixels.shape[-1] in (2, 4):
        return False
    return not white_background(np.broadcast_to(pixels[..., :3], pixels.shape[:2] + (3,)))


def matte(pixels: np.ndarray, matting: bool = True) -> np.ndarray:
    """uint8 RGBA ``[H, W, 4]`` of any uint8 image ``[H, W]`` or ``[H, W, 1|2|3|4]``: its alpha is the
    object's foreground (module docstring). With ``matting`` False an image without alpha is only
    thresholded against white, as if its background were white."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] in (1, 2):  # grey (+ alpha) → RGB (+ alpha)
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=-1), pixels[..., 1:]], axis=-1)
    if pixels.shape[-1] == 4:
        return pixels.astype(np.uint8)
    rgb = pixels[..., :3].astype(np.uint8)
    mask = grabcut_mask(rgb) if was_matted(rgb, matting) else framing.foreground_mask(rgb)
    return np.concatenate([rgb, np.where(mask, 255, 0).astype(np.uint8)[..., None]], axis=-1)
