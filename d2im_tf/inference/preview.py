"""Preview strip of a reconstruction: input | mesh from the input view | mesh from azimuth +90° |
front map | back map, as one RGB uint8 image (for ``d2im reconstruct`` and training previews).

The mesh is shaded by the dataset's renderer (:class:`d2im_tf.data.render.Renderer`) from metadata
rows, so the second panel lines up with the input when the view row is the input's camera; the side
panel's camera is moved along its axis until the mesh fills the panel (:func:`side_view`), since what
it is for is seeing the parts the input hides. The displacement maps share one symmetric
blue–white–red scale (blue negative, white 0, red positive), fixed by the largest magnitude of both maps.
"""

from __future__ import annotations

import numpy as np
import trimesh
from PIL import Image, ImageDraw, ImageFont

from d2im_tf.data.render import Renderer
from d2im_tf.geometry import camera

LABEL_HEIGHT = 18  # pixels of the column-title strip of a labelled grid
MIN_PANEL = 128  # pixels: small model inputs (32² in tests) are upscaled to at least this
SIDE_FILL = 0.85  # the share of a fitted side panel's width the mesh's bounding sphere spans
BLUE, WHITE, RED = np.array([0.23, 0.30, 0.75]), np.array([1.0, 1.0, 1.0]), np.array([0.71, 0.02, 0.15])


def diverging_colours(values: np.ndarray, scale: float) -> np.ndarray:
    """Values ``[...]`` → RGB uint8 ``[..., 3]``: −scale blue, 0 white, +scale red (clipped)."""
    t = np.clip(np.asarray(values, float) / max(scale, 1e-12), -1.0, 1.0)[..., None]  # [..., 1]
    colours = np.where(t < 0, WHITE + (BLUE - WHITE) * -t, WHITE + (RED - WHITE) * t)
    return np.round(colours * 255).astype(np.uint8)


def side_view(view, mesh: trimesh.Trimesh | None = None) -> np.ndarray:
    """The metadata row ``view`` (``[az, el, 0, d, ...]``) turned by +90° of azimuth. With ``mesh``, its
    distance is set so that the mesh's bounding sphere about the point the camera looks at (the origin)
    spans :data:`SIDE_FILL` of the image's width; without, it stays the input view's (for panels of
    several meshes that must share one scale)."""
    turned = np.array(view, dtype=float)
    turned[0] += 90.0
    if mesh is not None and len(mesh.vertices):
        radius = float(np.linalg.norm(mesh.vertices, axis=1).max())
        half_width = 0.5 * 224 / camera.focal_pixels(224)  # tan of half the field of view
        # the sphere's silhouette from distance D subtends asin(radius / D) about the axis
        distance = radius / np.sin(np.arctan(SIDE_FILL * half_width))
        turned[3] = distance / camera.MAX_DISTANCE
    return turned


def _resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` → ``[size, size, 3]`` (nearest neighbour: pixels stay visible)."""
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.NEAREST))


def mesh_panel(mesh: trimesh.Trimesh, view, size: int) -> np.ndarray:
    """Shaded render ``[size, size, 3]`` uint8 of ``mesh`` from metadata row ``view``; white if empty."""
    if len(mesh.faces) == 0:
        return np.full((size, size, 3), 255, np.uint8)
    return Renderer(mesh).render(view, size).rgba[..., :3]  # background pixels are white


def preview_image(
    image: np.ndarray, mesh: trimesh.Trimesh, view, maps: np.ndarray, panel_size: int | None = None
) -> np.ndarray:
    """The five-panel strip, uint8 ``[P, 5·P, 3]``.

    ``image`` ``[S, S, 3]`` (float in [0, 1] or uint8), ``mesh`` in the frame ``view`` (a metadata
    row ``[az, el, 0, d, ...]``) refers to, ``maps`` ``[S, S, 2]`` (front, back). ``panel_size``
    defaults to ``max(S, 128)``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    size = panel_size or max(image.shape[0], MIN_PANEL)
    maps = np.asarray(maps, float)
    scale = float(np.abs(maps).max()) if maps.size else 1.0
    panels = [
        _resized(image, size),
        mesh_panel(mesh, view, size),
        mesh_panel(mesh, side_view(view, mesh), size),
        _resized(diverging_colours(maps[..., 0], scale), size),
        _resized(diverging_colours(maps[..., 1], scale), size),
    ]
    return np.concatenate(panels, axis=1)


def labelled_grid(cells: list[list[np.ndarray]], column_titles, row_titles) -> Image.Image:
    """Square uint8 panels ``cells[row][column]`` (all ``[P, P, 3]``) as one image, with the column
    titles in a strip on top and each row's title in its first panel's top-left corner."""
    size = cells[0][0].shape[0]
    grid = Image.new("RGB", (size * len(cells[0]), LABEL_HEIGHT + size * len(cells)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=13)  # Pillow's bundled TrueType font (renders "°", not "²")
    for column, title in enumerate(column_titles):
        draw.text((column * size + 6, 2), title, fill="black", font=font)
    for row, (title, panels) in enumerate(zip(row_titles, cells)):
        for column, panel in enumerate(panels):
            grid.paste(Image.fromarray(panel), (column * size, LABEL_HEIGHT + row * size))
        draw.text((6, LABEL_HEIGHT + row * size + 4), title, fill="black", font=font)
    return grid
