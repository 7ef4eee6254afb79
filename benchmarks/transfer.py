"""Detail-transfer benchmark: does ``d2im transfer`` carry the source's relief onto the target?

On pairs of :mod:`d2im_tf.data.synth.pairs` (written first unless ``--data`` holds them): for each pair
the target and source renders are encoded with their GT cameras, and two meshes are extracted in the
target's frame — (a) the target's own reconstruction and (b) the transfer of the source's details
(whole-object box correspondence, both maps). Both are rendered from the target's view as normal maps
(224²) and compared with the rebuilt ground truth (the target's parts with the source's relief):

* the relief error (:mod:`d2im_tf.evaluation.relief`, mean degrees) on the **source's relief pixels**:
  where the rebuilt shape's normals depart from the coarse surface's (the relief-free parts), the
  relief a transfer has to bring. (Pixels of the target's own relief are left out: there a surface
  that merely loses its relief would score well.)
* the silhouette IoU of each mesh's normal-map foreground against the target GT's.

Reference rows in the same run: the rebuilt and the target GT marched again at the step of the
reconstructions' extraction grid (:func:`~d2im_tf.data.synth.pairs.remarched`: what a perfect transfer,
and a perfect reconstruction of the target, can score at that resolution); the coarse GT (what no
relief at all scores); the target GT itself. And whether the model recovers relief at all: the
target's own reconstruction against the *target* GT on the target's relief pixels, beside the coarse
GT and the re-marched target GT there (a model that carries relief scores below the coarse GT; a
transfer can only show what the maps carry).
Targets: (b)'s relief error ≥ 25% below (a)'s, and (b)'s silhouette IoU within 0.02 of (a)'s.
``--figure PNG`` draws, for the first pairs, the two inputs, the normal maps from the target's view of
the target GT, the rebuilt GT, (a) and (b), and the source's relief pixels (white).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import trimesh

MEASURE_SIZE = 224


def masks_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


# The table's rows: the two reconstructions, then the references (module docstring).
ROWS = ("own", "transfer", "grid_rebuilt", "grid_target", "gt_coarse", "gt_target")


def reconstruction_step(reconstructor, entry: dict) -> float:
    """The world-frame grid step of the reconstructor's extraction of the pair's target."""
    from d2im_tf.inference.extraction import grid_spacing
    from d2im_tf.inference.reconstruct import FRAME_BOUNDS

    step = grid_spacing(reconstructor.resolution, FRAME_BOUNDS[reconstructor.frame])
    return step * entry["target_norm_params"][3] if reconstructor.frame == "normalised" else step


def measure_pair(
    model, root: Path, entry: dict, where: str = "both", source_mask: bool = True, panels: list | None = None
) -> dict:
    """The row of one pair (module docstring); appends its figure row to ``panels`` if given."""
    from d2im_tf.applications.transfer import detail_transfer
    from d2im_tf.data.disn_format import read_image
    from d2im_tf.data.synth.pairs import remarched
    from d2im_tf.evaluation.metrics import normal_map
    from d2im_tf.evaluation.relief import foreground, relief_error, relief_pixels
    from d2im_tf.geometry.frames import to_world

    folder = root / entry["category"] / entry["pair"]
    view = np.asarray(entry["target_view"])
    target = model.encode(read_image(folder / "target.png"), view, entry["target_norm_params"])
    source = model.encode(read_image(folder / "source.png"), entry["source_view"], entry["source_norm_params"])
    meshes = {
        "own": model.extract(target),
        "transfer": model.extract(target, detail_transfer(model, source, target, where, source_mask=source_mask)),
    }
    maps = {
        key: normal_map(to_world(mesh, entry["target_norm_params"]), view, MEASURE_SIZE) for key, mesh in meshes.items()
    }
    for key in ("target", "rebuilt", "coarse"):
        maps[f"gt_{key}"] = normal_map(trimesh.load(folder / f"{key}.obj", force="mesh"), view, MEASURE_SIZE)
    for key, mesh in remarched(root, entry, reconstruction_step(model.reconstructor, entry)).items():
        maps[f"grid_{key}"] = normal_map(mesh, view, MEASURE_SIZE)
    relief = relief_pixels(maps["gt_rebuilt"], maps["gt_coarse"])  # the source's relief, where (b) must put it
    row = {"category": entry["category"], "pair": entry["pair"], "relief_pixels": int(relief.sum())}
    outline = foreground(maps["gt_target"])
    for key in ROWS:
        result = relief_error(maps[key], maps["gt_rebuilt"], relief=relief)
        row[f"{key}_relief_angle"] = result["relief_angle"]
        row[f"{key}_coverage"] = result["relief_coverage"]
        row[f"{key}_silhouette_iou"] = masks_iou(foreground(maps[key]), outline)
    own_relief = relief_pixels(maps["gt_target"], maps["gt_coarse"])  # does the model recover relief at all?
    for key in ("own", "gt_coarse", "grid_target"):
        against_target = relief_error(maps[key], maps["gt_target"], relief=own_relief)
        row[f"{key}_vs_target_relief_angle"] = against_target["relief_angle"]
    if panels is not None:
        panels.append(
            [
                target.image,
                source.image,
                *(normal_colours(maps[key]) for key in ("gt_target", "gt_rebuilt", "own", "transfer")),
                np.repeat(relief[..., None], 3, -1),
            ]
        )
    return row


FIGURE_COLUMNS = ("target", "source", "target GT", "rebuilt GT", "(a) own", "(b) transfer", "relief pixels")


def normal_colours(normals: np.ndarray) -> np.ndarray:
    """A normal map ``[S, S, 3]`` as RGB in [0, 1] (``n/2 + ½``), white background."""
    from d2im_tf.evaluation.relief import foreground

    return np.where(foreground(normals)[..., None], normals * 0.5 + 0.5, 1.0)


def write_figure(path, panels: list, size: int = 160) -> None:
    """The figure rows (module docstring of the stage) as one labelled PNG."""
    from PIL import Image

    from d2im_tf.data.disn_format import write_png
    from d2im_tf.inference.preview import labelled_grid

    def panel(image):
        pixels = np.round(np.clip(np.asarray(image, float), 0, 1) * 255).astype(np.uint8)
        return np.asarray(Image.fromarray(pixels).resize((size, size), Image.LANCZOS))

    grid = labelled_grid([[panel(image) for image in row] for row in panels], FIGURE_COLUMNS, [""] * len(panels))
    write_png(path, np.asarray(grid))


def run(args) -> dict:
    from d2im_tf.applications.fields import FieldModel
    from d2im_tf.bundled import BUNDLED_MODEL
    from d2im_tf.data.synth.pairs import make_pairs, read_pairs
    from d2im_tf.inference.reconstruct import Reconstructor

    with tempfile.TemporaryDirectory(prefix="d2im-transfer-") as scratch:
        root = Path(args.data) if args.data else Path(scratch)
        if args.data is None or not (root / "pairs.json").exists():
            make_pairs(
                root,
                args.categories,
                args.pairs,
                args.seed,
                args.image_size,
                args.mesh_resolution,
                progress=args.progress,
            )
        entries = read_pairs(root)
        model = FieldModel(Reconstructor(args.model or BUNDLED_MODEL, resolution=args.resolution))
        rows, panels = [], [] if args.figure else None
        shown: dict = {}  # category → pairs in the figure
        for entry in entries[: args.limit]:
            figure_rows = None
            if panels is not None and shown.get(entry["category"], 0) < args.figure_pairs:
                shown[entry["category"]] = shown.get(entry["category"], 0) + 1
                figure_rows = panels
            rows.append(measure_pair(model, root, entry, args.where, not args.no_source_mask, figure_rows))
            if args.progress:
                print(json.dumps(rows[-1]), flush=True)
        if args.figure:
            write_figure(args.figure, panels)
    return {
        "model": str(model.reconstructor.model_dir),
        "resolution": args.resolution,
        "where": args.where,
        "source_mask": not args.no_source_mask,
        "rows": rows,
        "summary": summarise(rows),
    }


def summarise(rows: list[dict]) -> dict:
    """Means over the pairs with relief pixels that every scored surface covers (a surface that covers
    none has no angle there: a pair it misses is left out for all, so that the rows compare the same
    pairs), and the targets' verdicts."""
    coverages = [key for key in rows[0] if key.endswith("_coverage")] if rows else []
    used = [row for row in rows if row["relief_pixels"] > 0 and all(row[key] > 0 for key in coverages)]
    mean = (
        {
            key: float(np.mean([row[key] for row in used])) if used else float("nan")
            for key in rows[0]
            if key not in ("category", "pair")
        }
        if rows
        else {}
    )
    own, transfer = mean.get("own_relief_angle", np.nan), mean.get("transfer_relief_angle", np.nan)
    reduction = 1.0 - transfer / own if own else float("nan")
    iou_gap = mean.get("own_silhouette_iou", np.nan) - mean.get("transfer_silhouette_iou", np.nan)
    return {
        "pairs": len(rows),
        "pairs_with_relief": len(used),
        "mean": mean,
        "relief_reduction": reduction,
        "silhouette_iou_gap": iou_gap,
        "meets_relief_target": bool(reduction >= 0.25),
        "meets_outline_target": bool(abs(iou_gap) <= 0.02),
    }


def show(result: dict) -> None:
    summary, mean = result["summary"], result["summary"]["mean"]
    print(
        f"detail transfer, {summary['pairs_with_relief']} of {summary['pairs']} pairs with relief pixels "
        "every surface covers; "
        f"model {result['model']}, {result['resolution']}³, --where {result['where']}, "
        f"source mask {'on' if result['source_mask'] else 'off'}"
    )
    print(f"{'':<28}{'relief error (°)':>18}{'coverage':>10}{'silhouette IoU':>16}")
    grid = f"at {result['resolution']}³"
    for key, title in (
        ("own", "(a) target's own"),
        ("transfer", "(b) transfer"),
        ("grid_rebuilt", f"rebuilt GT {grid}"),
        ("grid_target", f"target GT {grid}"),
        ("gt_coarse", "coarse GT (no relief)"),
        ("gt_target", "target GT (its relief)"),
    ):
        print(
            f"{title:<28}{mean[f'{key}_relief_angle']:>18.2f}{mean[f'{key}_coverage']:>10.2f}"
            f"{mean[f'{key}_silhouette_iou']:>16.3f}"
        )
    print(
        f"relief recovery of the model: (a) against the target GT on its relief "
        f"{mean['own_vs_target_relief_angle']:.2f}°, the coarse GT there "
        f"{mean['gt_coarse_vs_target_relief_angle']:.2f}° (below it: the maps carry relief), "
        f"the target GT {grid} {mean['grid_target_vs_target_relief_angle']:.2f}°"
    )
    print(
        f"relief error of (b) {-summary['relief_reduction']:+.1%} relative to (a) "
        f"(target ≤ −25%: {'met' if summary['meets_relief_target'] else 'NOT met'}); "
        f"silhouette IoU (a) − (b) = {summary['silhouette_iou_gap']:+.3f} "
        f"(target within 0.02: {'met' if summary['meets_outline_target'] else 'NOT met'})"
    )


HELP = "detail transfer vs the target's own reconstruction, relief error"


def configure(parser) -> None:
    parser.add_argument("--model", default=None, help="SavedModel folder (default: the bundled model)")
    parser.add_argument(
        "--data",
        default=None,
        help="pairs folder (d2im make-data --transfer-pairs); written there if it has none "
        "(default: a temporary folder)",
    )
    parser.add_argument("--categories", nargs="+", default=["03001627", "02933112"])
    parser.add_argument("--pairs", type=int, default=10, help="pairs per category (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224, help="render size of the pairs' images")
    parser.add_argument("--mesh-resolution", type=int, default=192, help="marching-cubes cells of the GT meshes")
    parser.add_argument("--resolution", type=int, default=128, help="extraction grid of the reconstructions")
    parser.add_argument("--where", choices=("front", "back", "both"), default="both", help="maps transferred")
    parser.add_argument(
        "--no-source-mask",
        action="store_true",
        help="transfer also where the source image shows background (d2im transfer --no-source-mask)",
    )
    parser.add_argument("--limit", type=int, default=None, help="measure only the first N pairs of the data")
    parser.add_argument(
        "--figure",
        default=None,
        metavar="PNG",
        help="also write the inputs, normal maps and relief pixels of the first pairs of each category",
    )
    parser.add_argument("--figure-pairs", type=int, default=2, help="pairs per category in the figure (default 2)")
    parser.add_argument("--progress", action="store_true", help="print each pair's row as it is measured")
