"""Does the framing alone move the model? Synthetic shapes with known cameras, framed three ways.

    python tools/framing_study.py --shapes 3 --out /tmp/framing_study    # 3 per category, bundled model

Shapes ``1000..1000+N-1`` of each category (``d2im make-data``'s generator, so never trained on), one
DISN view each at 128 px, rendered (a) at the view's distance (the training framing), (b) closer, the
distance ratio scaled so that the object's box spans :data:`FOREIGN_SIZE` of the side (the foreign
renders' median), and (c) (b) re-framed back to the training object size at reconstruction. For each:
the silhouette IoU with the predicted camera (:mod:`d2im_tf.evaluation.silhouette`) and the predicted
camera's mean 2D error on 2,048 surface points, in pixels of a 128 px image, and its rotation error
(degrees), against the GT camera.
Writes ``OUT/framing_study.md`` and a contact sheet per case (``OUT/<case>/contact_sheet.png``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FOREIGN_SIZE = 0.66
IMAGE_SIZE = 128
CATEGORIES = ("03001627", "04379243", "02933112", "04256520")


def cases(shapes: int, seed: int):
    """Yield ``(name, {framing: (rgba, world projection [3, 4])}, norm_params [4], normalised points [N, 3])``."""
    from d2im_tf.data import framing
    from d2im_tf.data.render import Renderer, random_views
    from d2im_tf.data.synth.generate import Settings, random_color, shape_streams, synthetic_shape
    from d2im_tf.data.synth.mesh_sdf import normalization
    from d2im_tf.geometry import camera

    settings = Settings(out=Path("."), seed=seed)
    for category in CATEGORIES:
        for index in range(1000, 1000 + shapes):
            streams = shape_streams(seed, category, index)
            mesh = synthetic_shape(settings, category, streams).mesh
            centre, scale, points = normalization(mesh, streams["samples"])
            renderer = Renderer(mesh, random_color(streams["color"]))
            row = random_views(streams["views"], 1)[0]
            view = renderer.render(row, IMAGE_SIZE)
            near = row.copy()
            near[3] = row[3] * framing.object_size(view.mask) / FOREIGN_SIZE  # the box scales ~ 1/distance
            renders = {
                "training framing": (view.rgba, row),
                "foreign framing": (renderer.render(near, IMAGE_SIZE).rgba, near),
            }
            yield (
                f"{category}_{index}",
                {
                    key: (
                        rgba,
                        camera.projection_from_metadata(r, IMAGE_SIZE),
                        camera.world_to_camera(r[0], r[1], r[3])[0],
                    )
                    for key, (rgba, r) in renders.items()
                },
                np.array([*centre, scale]),
                points[::8],
            )


def camera_error(input_projection, truth, norm_params, points) -> float:
    """Mean pixel distance between normalised ``points [N, 3]`` projected by the predicted
    ``input_projection`` and by the GT world projection ``truth`` with the normalisation folded in."""
    from d2im_tf.geometry.frames import normalised_projection

    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)  # [N, 4]
    predicted = homogeneous @ np.asarray(input_projection).T
    true = homogeneous @ normalised_projection(truth, norm_params).T
    return float(np.linalg.norm(predicted[:, :2] / predicted[:, 2:] - true[:, :2] / true[:, 2:], axis=1).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="SavedModel (default: the bundled model)")
    parser.add_argument("--shapes", type=int, default=3, help="shapes per category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from d2im_tf.commands.reconstruct import BUNDLED_MODEL
    from d2im_tf.evaluation.images import evaluate_image, write_image_reports
    from d2im_tf.inference.reconstruct import Reconstructor
    from d2im_tf.io import check_output_dir

    out = check_output_dir(args.out)
    model = args.model or BUNDLED_MODEL
    reconstructors = {
        "as given": Reconstructor(model, resolution=args.resolution, object_size=None),
        "re-framed": Reconstructor(model, resolution=args.resolution, object_size="auto"),
    }
    rows: dict[str, list] = {}
    cells: dict[str, list] = {}
    for name, renders, norm_params, points in cases(args.shapes, args.seed):
        for framing_name, (rgba, truth, rotation) in renders.items():
            for how, reconstructor in reconstructors.items():
                case = f"{framing_name}, {how}"
                scores, panels, result = evaluate_image(reconstructor, rgba)
                scores["camera_px"] = camera_error(result.input_projection, truth, norm_params, points)
                cosine = (np.trace(rotation @ result.pose[0].T) - 1.0) / 2.0
                scores["rotation_deg"] = float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
                rows.setdefault(case, []).append({"image": name, **scores})
                cells.setdefault(case, []).append(panels)
                print(case, name, {k: round(v, 3) for k, v in scores.items()}, flush=True)
    keys = ("iou", "outside", "missed", "object_size", "camera_px", "rotation_deg")
    lines = [
        "| case | silhouette IoU | outside | missed | object size | camera 2D error (px of 128) "
        "| rotation error (°, median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, case_rows in rows.items():
        mean = {key: np.mean([row[key] for row in case_rows]) for key in keys}
        mean["rotation_deg"] = np.median([row["rotation_deg"] for row in case_rows])
        lines.append(f"| {case} | " + " | ".join(f"{mean[key]:.3f}" for key in keys) + " |")
        write_image_reports(case_rows, cells[case], out / case.replace(", ", "_").replace(" ", "_"))
    (out / "framing_study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
