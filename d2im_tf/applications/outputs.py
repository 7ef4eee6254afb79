"""What ``d2im transfer`` and ``d2im paste`` write: the meshes and one labelled preview strip.

The strip shows the inputs, then the target's own reconstruction and the application's result, each
from the target's input view and from the side (azimuth + 90°), rendered by the dataset's renderer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from d2im_tf.data.disn_format import atomic_path, write_png
from d2im_tf.inference.preview import labelled_grid, mesh_panel, side_view

PANEL = 192  # pixels per panel at least (the model's input is upscaled to it)


def image_panel(image: np.ndarray, size: int) -> np.ndarray:
    """An image (float in [0, 1] or uint8, ``[H, W, 3]``) as a ``[size, size, 3]`` uint8 panel."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(image[..., :3]).resize((size, size), Image.LANCZOS))


def preview(inputs: dict, meshes: dict, view, size: int | None = None) -> Image.Image:
    """One row: each input image, then each mesh from ``view`` and from the side; titled columns."""
    first = next(iter(inputs.values()))
    size = size or max(np.asarray(first).shape[0], PANEL)
    panels, titles = [], []
    for title, image in inputs.items():
        panels.append(image_panel(image, size))
        titles.append(title)
    for title, mesh in meshes.items():
        panels += [mesh_panel(mesh, view, size), mesh_panel(mesh, side_view(view), size)]
        titles += [title, f"{title}, side"]
    return labelled_grid([panels], titles, [""])


def write_outputs(
    out: Path, name: str, meshes: dict, strip: Image.Image, mesh_format: str = "obj", extra_images: dict | None = None
) -> list[Path]:
    """``OUT/<key>.<format>`` per non-empty mesh, ``OUT/<name>_preview.png`` and ``OUT/<key>.png`` per
    extra image; returns the paths written."""
    written = []
    for key, mesh in meshes.items():
        if len(mesh.faces) == 0:
            continue
        path = out / f"{key}.{mesh_format}"
        with atomic_path(path) as tmp:
            mesh.export(tmp, file_type=mesh_format)
        written.append(path)
    for key, image in (extra_images or {}).items():
        path = out / f"{key}.png"
        write_png(path, np.asarray(image))
        written.append(path)
    path = out / f"{name}_preview.png"
    write_png(path, np.asarray(strip))
    return written + [path]


def empty_meshes(meshes: dict[str, trimesh.Trimesh]) -> list[str]:
    """The keys of the meshes without faces (a field without a surface in the box)."""
    return [key for key, mesh in meshes.items() if len(mesh.faces) == 0]
