"""The ``reconstruct`` benchmark: seconds per image → mesh at 128³ (``--resolution``) through an exported SavedModel
(:class:`d2im_tf.inference.reconstruct.Reconstructor`; GT camera of a rendered sphere, or ``--image``
through the model's camera network), dense vs coarse-to-fine, split into encode / SDF evaluation /
marching cubes, and the ratio dense / c2f; and two same-run baselines of coarse-to-fine: decoding
exactly (with the front/back split's second decoder pass) at every evaluated point instead of the
one-pass bounds (``one_pass_bounds=False``), and evaluating ``--baseline-batch-points`` points per call
instead of :data:`d2im_tf.config.BATCH_POINTS`.
Without ``--model`` it exports a default-size (224², ``full``) *untrained* model, adjusted to look like
a trained one where it matters for the comparison (the output says it is untrained): the base
decoder's output is scaled so that its steepest slope on a 32³ grid is a true SDF's (``sdf_scale``;
a random field is much flatter, and nothing could be certified far from its surface) and shifted so
that its zero level crosses the box (otherwise coarse-to-fine would have no surface to refine and the
comparison would flatter it), and the detail decoder's output
is scaled to displacements of at most 0.1 SDF units (1% of the box), a detail's size — random maps
are large, and their jumps force a wide band (:class:`d2im_tf.inference.reconstruct.Reconstructor`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmarks import REPOSITORY
from d2im_tf.errors import UserError

HELP = "image → mesh, dense vs coarse-to-fine"


def configure(parser) -> None:
    parser.add_argument(
        "--model", default=None, help="SavedModel folder (default: export an untrained default-size model)"
    )
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per mode, the modes interleaved (median reported)"
    )
    parser.add_argument(
        "--image",
        type=Path,
        default=None,
        help="input image, seen through the model's camera network (default: a rendered sphere with its known camera)",
    )
    parser.add_argument(
        "--baseline-batch-points",
        type=int,
        default=65536,
        help="points per SDF call of the baseline coarse-to-fine run",
    )


MAX_DISPLACEMENT = 0.1  # SDF units (×10): the untrained benchmark model's largest displacement


def _untrained_model(out: Path, image, view_row) -> Path:
    """Export the default config's random-init SDF network: small maps, SDF-like base field with
    its zero level in the box (module docstring)."""
    import numpy as np

    from d2im_tf.config import load_config
    from d2im_tf.deploy.export import export_saved_model
    from d2im_tf.geometry import camera
    from d2im_tf.inference.extraction import sdf_grid_points
    from d2im_tf.training.run import build_model

    config = load_config(REPOSITORY / "configs" / "default.yaml")
    model = build_model(config, "sdf")
    size = config.model.image_size
    maps_layer = model.detail_decoder.output_layer
    factor = MAX_DISPLACEMENT / float(np.abs(model.encode(image[None])["maps"]).max())
    maps_layer.kernel.assign(maps_layer.kernel * factor)
    maps_layer.bias.assign(maps_layer.bias * factor)
    projection = camera.projection_from_metadata(view_row, size)[None].astype(np.float32)  # [1, 3, 4]
    base_layer = model.base_decoder.output_layer
    grid = model.predict_sdf(image[None], sdf_grid_points(32)[None], projection)["base"].reshape(32, 32, 32)
    slope = max(float(np.abs(np.diff(grid, axis=axis)).max()) for axis in range(3)) * 32  # per unit length
    factor = model.sdf_scale / slope
    base_layer.kernel.assign(base_layer.kernel * factor)
    base_layer.bias.assign(base_layer.bias * factor)
    values = model.predict_sdf(image[None], sdf_grid_points(16)[None], projection)["sdf"]  # [1, 16³]
    base_layer.bias.assign(base_layer.bias - float(np.median(values)))  # half the grid inside: a surface
    return export_saved_model(model, out)


def run(args) -> dict:
    import numpy as np
    import trimesh

    from d2im_tf.config import BATCH_POINTS
    from d2im_tf.data.disn_format import read_image
    from d2im_tf.data.render import Renderer
    from d2im_tf.inference.reconstruct import Reconstructor, prepare_image

    if args.image is not None and args.model is None:
        raise UserError("--image needs --model (a trained model with a camera network)")
    if args.image is None:  # a rendered sphere seen from a known camera
        view_row = np.array([30.0, 20.0, 0.0, 0.8, 35.0, 32.0, 1.75, 0.0, 0.0, 0.0])
        pixels = Renderer(trimesh.creation.icosphere(3, radius=0.3)).render(view_row, 224).rgba  # [224, 224, 4]
    else:  # the model's camera network gives the view
        view_row, pixels = None, read_image(args.image)
    workdir = tempfile.TemporaryDirectory(prefix="d2im_bench_")
    trained = args.model is not None
    model = args.model or _untrained_model(Path(workdir.name), prepare_image(pixels, 224), view_row)
    result = {
        "model": str(model),
        "trained": trained,
        "resolution": args.resolution,
        "image": str(args.image or "rendered sphere"),
        "batch_points": BATCH_POINTS,
        "baseline_batch_points": args.baseline_batch_points,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "modes": {},
    }
    baseline_batch = f"c2f_batch_{args.baseline_batch_points}"
    settings = {  # name: (mode, points per call, one-pass bounds)
        "dense": ("dense", BATCH_POINTS, True),
        "coarse_to_fine": ("coarse_to_fine", BATCH_POINTS, True),
        "c2f_exact_split": ("coarse_to_fine", BATCH_POINTS, False),
        baseline_batch: ("coarse_to_fine", args.baseline_batch_points, True),
    }
    reconstructors = {
        name: Reconstructor(  # without the pose fit, the same NumPy work in every mode
            model,
            resolution=args.resolution,
            mode=mode,
            batch_points=batch_points,
            one_pass_bounds=one_pass_bounds,
            fit_pose=False,
        )
        for name, (mode, batch_points, one_pass_bounds) in settings.items()
    }
    for reconstructor in reconstructors.values():
        reconstructor.reconstruct(pixels, view_row)  # warm-up: first calls of the signatures
    runs = {name: [] for name in settings}
    for _ in range(args.repeats):  # interleaved, so that a drift of the machine's speed hits every mode alike
        for name, reconstructor in reconstructors.items():
            runs[name].append(reconstructor.reconstruct(pixels, view_row))
    for name in settings:
        timings = [run.timings for run in runs[name]]
        stages = {stage: float(np.median([timing[stage] for timing in timings])) for stage in timings[0]}
        result["modes"][name] = {
            "stages_seconds": stages,
            "total_seconds": sum(stages.values()),
            "faces": int(len(runs[name][0].mesh.faces)),
        }
    workdir.cleanup()
    modes = result["modes"]
    dense, fine = modes["dense"], modes["coarse_to_fine"]
    result["ratio_total"] = dense["total_seconds"] / fine["total_seconds"]
    result["ratio_sdf_evaluation"] = (
        dense["stages_seconds"]["sdf_evaluation"] / fine["stages_seconds"]["sdf_evaluation"]
    )
    result["ratio_one_pass_bounds"] = modes["c2f_exact_split"]["total_seconds"] / fine["total_seconds"]
    result["ratio_batch"] = modes[baseline_batch]["total_seconds"] / fine["total_seconds"]
    return result


def show(result: dict) -> None:
    state = (
        "trained"
        if result["trained"]
        else ("UNTRAINED: random init, base scaled to an SDF's slope and shifted to cross zero, maps ≤ 0.1")
    )
    print(
        f"reconstruct benchmark: {result['model']} — {state}; input: {result['image']}; "
        f"{result['resolution']}³ grid, {result['cores']} cores, median seconds per image"
    )
    modes = result["modes"]
    names = list(modes["dense"]["stages_seconds"])
    print(f"  {'stage':<16}" + "".join(f"{mode:>20}" for mode in modes))
    for name in names:
        print(f"  {name:<16}" + "".join(f"{modes[mode]['stages_seconds'][name]:20.3f}" for mode in modes))
    print(f"  {'total':<16}" + "".join(f"{modes[mode]['total_seconds']:20.3f}" for mode in modes))
    print(f"  {'mesh faces':<16}" + "".join(f"{modes[mode]['faces']:20d}" for mode in modes))
    print(
        f"  dense / coarse-to-fine: {result['ratio_total']:.1f}× in total, "
        f"{result['ratio_sdf_evaluation']:.1f}× in SDF evaluation"
    )
    print(
        f"  coarse-to-fine decoding exactly at every point / with the one-pass bounds (the default): "
        f"{result['ratio_one_pass_bounds']:.2f}×"
    )
    print(
        f"  coarse-to-fine at {result['baseline_batch_points']} points per call / at {result['batch_points']} "
        f"(the default): {result['ratio_batch']:.2f}×"
    )
