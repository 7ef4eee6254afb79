"""Evaluation on a folder of images without 3D ground truth: silhouette agreement and a contact sheet.

Each image is reconstructed with the predicted camera (:class:`d2im_tf.inference.reconstruct.Reconstructor`);
the mesh is drawn with :attr:`~d2im_tf.inference.reconstruct.Reconstruction.input_projection`, in the
input image's own pixels, and compared with the input's foreground (alpha, else non-white, else the
matte: :mod:`d2im_tf.inference.matting`) by :func:`d2im_tf.evaluation.silhouette.silhouette_scores`;
the mesh's connected parts are counted (:func:`~d2im_tf.evaluation.silhouette.fragmentation`).

Writes ``OUT/silhouette.md`` and ``OUT/silhouette.csv`` (one row per image and the mean) and
``OUT/contact_sheet.png``: one row per image, *input* | *mesh from the input's camera* (shaded, the
input's foreground outlined in red) | *mesh from the side* (azimuth +90° from the predicted view, the
mesh filling the panel);
without the input column if asked (for images that may not be redistributed).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from d2im_tf.data import framing
from d2im_tf.evaluation.silhouette import fragmentation, render_with_projection, silhouette_scores

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PANEL = 160  # pixels per contact-sheet panel
COLUMNS = {
    "iou": "silhouette IoU",
    "outside": "mesh outside foreground",
    "missed": "foreground missed",
    "object_size": "object size",
    "parts": "parts ≥ 1% of the area",
    "detached": "area outside the largest part",
}
OUTLINE = np.array([220, 30, 30], np.uint8)


def image_paths(folder) -> list[Path]:
    """The PNG/JPEG files of ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _square(pixels: np.ndarray, size: int = PANEL) -> np.ndarray:
    """uint8 ``[H, W, 3]`` padded with white to a centred square and resized to ``size``."""
    height, width = pixels.shape[:2]
    side = max(height, width)
    square = np.full((side, side, 3), 255, np.uint8)
    square[(side - height) // 2 : (side - height) // 2 + height, (side - width) // 2 : (side - width) // 2 + width] = (
        pixels
    )
    return np.asarray(Image.fromarray(square).resize((size, size), Image.LANCZOS))


def _outline(mask: np.ndarray) -> np.ndarray:
    """bool ``[H, W]``: the pixels of ``mask`` with a 4-neighbour outside it."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def input_view_panel(shading: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]``: the mesh's shading (grey on white) with the foreground's outline in red."""
    panel = np.repeat(np.round(shading * 255).astype(np.uint8)[..., None], 3, axis=-1)
    panel[_outline(foreground)] = OUTLINE
    return panel


def evaluate_image(reconstructor, pixels: np.ndarray):
    """``(scores, panels, reconstruction)`` of one uint8 image: :func:`silhouette_scores`,
    ``object_size`` (of the input's foreground) and the mesh's :func:`fragmentation`; the three
    contact-sheet panels ``[PANEL, PANEL, 3]`` and the :class:`~d2im_tf.inference.reconstruct.Reconstruction`."""
    from d2im_tf.data.disn_format import on_white
    from d2im_tf.inference.preview import mesh_panel, side_view

    result = reconstructor.reconstruct(pixels)
    height, width = pixels.shape[:2]
    mesh_mask, shading = render_with_projection(result.mesh, result.input_projection, height, width)
    scores = silhouette_scores(mesh_mask, result.foreground)
    scores["object_size"] = framing.object_size(result.foreground)
    scores.update(fragmentation(result.mesh))
    shown = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)
    shown = np.round(on_white(shown)).astype(np.uint8) if shown.shape[-1] == 4 else shown[..., :3]
    panels = [
        _square(shown),
        _square(input_view_panel(shading, result.foreground)),
        mesh_panel(result.mesh, side_view(result.view, result.mesh), PANEL),
    ]
    return scores, panels, result


def evaluate_images(reconstructor, paths, progress: bool = True) -> tuple[list[dict], list[list[np.ndarray]]]:
    """Rows ``{"image", **COLUMNS}`` (:data:`COLUMNS`' keys) and contact-sheet panels per image of
    ``paths``; an unreadable image is reported on one line and left out."""
    from tqdm import tqdm

    from d2im_tf.data.disn_format import read_image
    from d2im_tf.errors import UserError

    rows, cells = [], []
    for path in tqdm(paths, desc="evaluate", unit="image", disable=not progress, file=sys.stderr):
        try:
            pixels = read_image(path)
        except UserError as error:
            tqdm.write(f"error: {error}", file=sys.stderr)
            continue
        scores, panels, _ = evaluate_image(reconstructor, pixels)
        rows.append({"image": Path(path).name, **scores})
        cells.append(panels)
    return rows, cells


def mean_row(rows: list[dict]) -> dict:
    return {"image": "mean", **{key: float(np.mean([row[key] for row in rows])) for key in COLUMNS}}


def _cell(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| image | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in [*rows, mean_row(rows)] if rows else []:
        lines.append(f"| {row['image']} | " + " | ".join(_cell(row[key]) for key in COLUMNS) + " |")
    return "\n".join(lines)


def write_image_reports(rows: list[dict], cells: list[list[np.ndarray]], out, inputs: bool = True) -> dict:
    """Write ``silhouette.md``, ``silhouette.csv`` and ``contact_sheet.png`` (``inputs``: with the input
    column) into ``out``; their paths."""
    from d2im_tf.data.disn_format import atomic_path, write_png
    from d2im_tf.inference.preview import labelled_grid

    out = Path(out)
    paths = {"markdown": out / "silhouette.md", "csv": out / "silhouette.csv", "sheet": out / "contact_sheet.png"}
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(markdown_table(rows) + "\n")
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", *COLUMNS], extrasaction="ignore")
        writer.writeheader()
        for row in [*rows, mean_row(rows)] if rows else []:
            writer.writerow({key: f"{value:.4f}" if isinstance(value, float) else value for key, value in row.items()})
    if cells:
        titles = [f"{row['image']}  IoU {row['iou']:.2f}, {row['parts']} part(s)" for row in rows]
        columns = ["input", "mesh, input's camera", "mesh, side"]
        start = 0 if inputs else 1
        grid = labelled_grid([row[start:] for row in cells], columns[start:], titles)
        write_png(paths["sheet"], np.asarray(grid))
    return paths
