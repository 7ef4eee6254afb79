"""The ``data`` benchmark: one synthetic chair, 36 views at 224², 32,768 SDF samples with gradients and
densities, on one core; seconds per stage, and a plain baseline measured in the same run
(``trimesh.proximity.signed_distance`` on a subset of the same samples, extrapolated linearly)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

HELP = "synthetic data generation, one shape"


def configure(parser) -> None:
    parser.add_argument("--category", default="03001627")
    parser.add_argument("--views", type=int, default=36)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=32768)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline-subset", type=int, default=1000, help="samples on which the baseline is timed (then extrapolated)"
    )


def _pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity)"


class Stopwatch:
    """Accumulates wall-clock and CPU seconds per named stage (CPU time is robust to other load)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def __call__(self, name, function, *args, **kwargs):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function(*args, **kwargs)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - start_cpu
        return result


def run(args) -> dict:
    import numpy as np
    import trimesh

    from d2im_tf.data.render import Renderer, random_views
    from d2im_tf.data.synth import generate, mesh_sdf

    pinned = _pin_to_one_core()
    workdir = tempfile.TemporaryDirectory(prefix="d2im_bench_")
    settings = generate.Settings(
        out=Path(workdir.name), views=args.views, image_size=args.image_size, samples=args.samples, seed=args.seed
    )
    streams = generate.shape_streams(args.seed, args.category, 0)
    clock = Stopwatch()
    shape = clock("shape (SDF grid + marching cubes)", generate.synthetic_shape, settings, args.category, streams)
    mesh = shape.mesh
    samples = clock(
        "samples (normalise, exact SDF, bands, gradients)",
        mesh_sdf.sample_sdf,
        mesh,
        streams["samples"],
        args.samples,
        with_density=False,
    )
    world = samples.points * samples.norm_params[3] + samples.norm_params[:3]
    samples.density = clock("density", mesh_sdf.sample_density, world, samples.sdf)
    rows = random_views(streams["views"], args.views)
    renderer = clock("render setup (embree scene)", Renderer, mesh)
    render_stage = f"render {args.views} views at {args.image_size}²"
    views = [clock(render_stage, renderer.render, row, args.image_size) for row in rows]
    layout = settings.layout
    clock(
        "write files (OBJ, h5, PNGs)", generate.write_shape_files, layout, "bench", "shape", mesh, samples, rows, views
    )
    workdir.cleanup()
    varied = _bench_appearance(args, mesh, rows, renderer)

    subset = np.random.default_rng(0).choice(len(world), size=min(args.baseline_subset, len(world)), replace=False)
    baseline_sdf = -clock("baseline", trimesh.proximity.signed_distance, mesh, world[subset])  # trimesh: + inside
    baseline = clock.cpu_seconds.pop("baseline") * len(world) / len(subset)
    clock.seconds.pop("baseline")
    ours_sdf = clock.cpu_seconds["samples (normalise, exact SDF, bands, gradients)"]
    sign_agreement = float(np.mean((baseline_sdf < 0) == (samples.sdf[subset] < 0)))
    distance_error = float(np.max(np.abs(np.abs(baseline_sdf) / samples.norm_params[3] - np.abs(samples.sdf[subset]))))
    return {
        "pinning": pinned,
        "mesh_faces": int(len(mesh.faces)),
        "stages_wall_seconds": clock.seconds,
        "stages_cpu_seconds": clock.cpu_seconds,
        "total_wall_seconds": sum(clock.seconds.values()),
        "total_cpu_seconds": sum(clock.cpu_seconds.values()),
        "baseline": f"trimesh.proximity.signed_distance on {len(subset)} of the {len(world)} samples, extrapolated",
        "baseline_cpu_seconds_extrapolated": baseline,
        "speedup_of_sdf_stage_vs_baseline": baseline / ours_sdf,
        "baseline_sign_agreement": sign_agreement,
        "baseline_max_abs_distance_difference": distance_error,
        "appearance_cpu_seconds": varied,
        "appearance_render_vs_plain_render": varied["render"] / clock.cpu_seconds[render_stage],
    }


def _bench_appearance(args, mesh, rows, renderer) -> dict:
    """CPU seconds of ``make-data --appearance varied --render-sizes 137 224`` on top of the plain
    shape: labelling faces by part and drawing materials, then the supersampled renders of the views."""
    import numpy as np

    from d2im_tf.data.synth import appearance, generate, shapes

    clock = Stopwatch()
    parts = shapes.family_parts(args.category, generate.shape_streams(args.seed, args.category, 0)["geometry"])
    raw = shapes.mesh_parts(parts)  # the mesh before rounding carries the family frame
    rng = np.random.default_rng(0)

    def looks():
        return appearance.random_look(
            rng, shapes.face_parts(parts, mesh, raw.metadata["family_frame"]), shapes.thin_parts(parts)
        )

    look = clock("groups", looks)
    for row in rows:
        lighting, size = appearance.random_view_style(rng, (137, 224))
        clock("render", renderer.render_appearance, row, args.image_size, look, lighting, 3, size)
    return clock.cpu_seconds


def show(result: dict) -> None:
    wall, cpu = result["stages_wall_seconds"], result["stages_cpu_seconds"]
    width = max(len(name) for name in wall) + 2
    print(f"data benchmark: one chair, {result['mesh_faces']} faces, {result['pinning']}")
    print(f"  {'stage':<{width}} {'CPU s':>7} {'wall s':>7}")
    for name in wall:
        print(f"  {name:<{width}} {cpu[name]:7.2f} {wall[name]:7.2f}")
    print(
        f"  {'total per shape':<{width}} {result['total_cpu_seconds']:7.2f} {result['total_wall_seconds']:7.2f}"
        "   (target ≤ 5 s)"
    )
    varied = result["appearance_cpu_seconds"]
    print(
        f"  --appearance varied --render-sizes 137 224: + {varied['groups']:.2f} CPU s (part labels, materials),"
        f" renders {varied['render']:.2f} CPU s = {result['appearance_render_vs_plain_render']:.1f}× the plain"
        " renders (they replace the plain RGBA; the maps still come from the plain render)"
    )
    print(f"  baseline: {result['baseline']}: {result['baseline_cpu_seconds_extrapolated']:.1f} CPU s")
    print(
        f"  SDF stage speed-up over the baseline (CPU time): {result['speedup_of_sdf_stage_vs_baseline']:.1f}×"
        f"  (sign agreement {result['baseline_sign_agreement']:.4f},"
        f" max |distance| difference {result['baseline_max_abs_distance_difference']:.1e})"
    )
