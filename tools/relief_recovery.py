"""Does a model recover the relief of a dataset's shapes? The relief error on every view that shows relief.

    python tools/relief_recovery.py saved_models/memo --data data/memo --split train
    python tools/relief_recovery.py runs/relief/export --data data/relief --split test --max-shapes 10

For each shape of the split and each of its views whose relief pixels (the GT's normals against those
of the shape without its relief, ``coarse.obj`` of ``make-data --coarse-sdf``;
:mod:`d2im_tf.evaluation.relief`) are not empty, the model reconstructs the view with the GT camera
and the relief error is measured for three surfaces: the model's output, its base field f_B alone, and
the relief-free shape itself, the score of a surface that is right everywhere but carries no relief. A
model recovers relief when its output scores below the relief-free shape. ``d2im evaluate`` measures
one view per shape (the paper's protocol); a memorised or a small set needs every view to say anything.
Prints one line per view, then for the output and f_B the mean over the views they cover (a surface
that covers none of a view's relief pixels has no angle there), beside the relief-free shape's mean
over the same views.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from d2im_tf.errors import UserError  # noqa: E402
from d2im_tf.quiet import quiet_tensorflow  # noqa: E402

SURFACES = ("output", "base", "relief-free")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="exported SavedModel (d2im export)")
    parser.add_argument("--data", type=Path, required=True, help="dataset made with make-data --coarse-sdf")
    parser.add_argument("--split", default="test", help="split of the dataset (default test)")
    parser.add_argument("--max-shapes", type=int, default=None, help="at most this many shapes per category")
    parser.add_argument("--resolution", type=int, default=128, help="extraction grid (default 128)")
    args = parser.parse_args(argv)
    quiet_tensorflow()
    try:
        rows = measure(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {args.data}: no view of split {args.split!r} shows relief", file=sys.stderr)
        return 2
    print(f"{len(rows)} views with relief; relief error (°) on the views each surface covers:")
    for key in SURFACES[:2]:  # each against the relief-free shape on the same views
        covered = [row for row in rows if not np.isnan(row[key])]
        mean = np.mean([row[key] for row in covered]) if covered else float("nan")
        free = np.mean([row["relief-free"] for row in covered]) if covered else float("nan")
        print(f"  {key:6s} {mean:5.1f}, the relief-free shape {free:5.1f} on the same {len(covered)} views")
    return 0


def measure(args) -> list[dict]:
    """One row per view with relief: ``category, shape, view, pixels`` and the relief error of each surface."""
    from d2im_tf.data import disn_format as fmt
    from d2im_tf.data.disn_format import DatasetLayout
    from d2im_tf.evaluation import relief
    from d2im_tf.evaluation.evaluate import EvaluationCase, split_pairs
    from d2im_tf.geometry.frames import to_normalised
    from d2im_tf.inference.reconstruct import Reconstructor

    layout = DatasetLayout(args.data)
    pairs = split_pairs(layout, args.split, max_shapes=args.max_shapes)
    if not pairs:
        raise UserError(f"{args.data}: no shapes in split {args.split!r}")
    for category, shape in pairs:
        if not layout.coarse_mesh_path(category, shape).is_file():
            raise UserError(f"{layout.coarse_mesh_path(category, shape)}: not found (make-data --coarse-sdf writes it)")
    reconstructor = Reconstructor(args.model, resolution=args.resolution)
    rows = []
    for category, shape in pairs:
        case = EvaluationCase.load(layout, category, shape)  # its GT, relief-free shape and norm params
        for view, row in enumerate(fmt.read_metadata(layout.metadata_path(category, shape))):  # [V, 10]
            normals = partial(normal_map, norm_params=case.norm_params, row=row)
            truth_normals, coarse_normals = normals(case.truth), normals(case.coarse)
            pixels = relief.relief_pixels(truth_normals, coarse_normals)
            if not pixels.any():
                continue
            image = fmt.read_image(layout.image_path(category, shape, view))
            scores = {"relief-free": relief.relief_error(coarse_normals, truth_normals, relief=pixels)}
            for name, surface in (("output", "detailed"), ("base", "base")):
                made = reconstructor.reconstruct(image, row, case.norm_params, surface=surface)
                mesh = to_normalised(made.mesh, case.norm_params) if made.frame == "world" else made.mesh
                scores[name] = relief.relief_error(normals(mesh), truth_normals, relief=pixels)
            rows.append(
                {"category": category, "shape": shape, "view": view, "pixels": int(pixels.sum())}
                | {key: relief.covered_angle(score) for key, score in scores.items()}
            )
            print(
                f"{category}/{shape} view {view}: {rows[-1]['pixels']} relief pixels; "
                + ", ".join(f"{key} {rows[-1][key]:.1f}°" for key in SURFACES),
                flush=True,
            )
    return rows


def normal_map(mesh, norm_params, row):
    """``[224, 224, 3]`` camera-frame normal map of a normalised-frame mesh seen from metadata ``row``."""
    from d2im_tf.evaluation import metrics
    from d2im_tf.geometry.frames import to_world

    return metrics.normal_map(to_world(mesh, norm_params), row)


if __name__ == "__main__":
    sys.exit(main())
