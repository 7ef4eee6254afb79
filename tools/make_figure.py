"""The README picture: a grid of generated objects (RGB view, its normal map, depth, another view).

``python tools/make_figure.py [--out docs/images/dataset_grid.png] [--seed 2] [--size 256]``
renders one shape per procedural family with the dataset's own pipeline (shape generator, renderer,
normal-map and depth encodings) and writes a labelled PNG grid.
``python tools/make_figure.py --extended --out docs/images/dataset_extended.png --size 160`` draws one
row per extended family (``shapes_extra``): the plain render, two with varied appearance, the normal map.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from d2im_tf.data import disn_format as fmt  # noqa: E402
from d2im_tf.data.categories import CATEGORY_NAMES  # noqa: E402
from d2im_tf.data.render import Renderer  # noqa: E402
from d2im_tf.data.synth import generate, shapes  # noqa: E402
from d2im_tf.inference.preview import labelled_grid  # noqa: E402

MAIN_VIEW = (60.0, 25.0, 0.0, 0.62)  # az, el, 0, distance ratio: front-right, slightly above
OTHER_VIEW = (150.0, 35.0, 0.0, 0.62)  # front-left, higher
COLUMNS = ("RGB (alpha on white)", "normal map (_mnormal)", "depth", "another view")


def _depth_image(depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Depth as grey, near = bright, background white. ``[S, S, 3]`` uint8."""
    grey = np.full(depth.shape, 255, dtype=np.uint8)
    if mask.any():
        near, far = depth[mask].min(), depth[mask].max()
        grey[mask] = np.round(230 - 200 * (depth[mask] - near) / max(far - near, 1e-9)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _on_white(rgba: np.ndarray) -> np.ndarray:
    return np.round(fmt.on_white(rgba)).astype(np.uint8)


def shape_row(category: str, seed: int, size: int) -> list[np.ndarray]:
    settings = generate.Settings(out=Path("."), seed=seed)
    streams = generate.shape_streams(seed, category, 0)
    mesh = generate.synthetic_shape(settings, category, streams).mesh
    renderer = Renderer(mesh, generate.random_color(streams["color"]))
    main, other = renderer.render(MAIN_VIEW, size), renderer.render(OTHER_VIEW, size)
    normals = fmt.encode_normals(main.normals, main.mask)
    return [_on_white(main.rgba), normals, _depth_image(main.depth, main.mask), _on_white(other.rgba)]


EXTENDED_COLUMNS = ("plain", "varied appearance", "varied, another view", "normal map")


def extended_row(family, seed: int, size: int, row: int) -> list[np.ndarray]:
    from d2im_tf.data.synth import appearance

    parts = family(np.random.default_rng(seed))
    mesh = shapes.mesh_parts(parts, shapes.DEFAULT_RESOLUTION)
    frame = mesh.metadata["family_frame"]
    look = appearance.random_look(
        np.random.default_rng([seed, row]), shapes.face_parts(parts, mesh, frame), shapes.thin_parts(parts)
    )
    renderer = Renderer(mesh, generate.random_color(np.random.default_rng(seed)))
    main = renderer.render(MAIN_VIEW, size)
    varied = [
        renderer.render_appearance(view, size, look, appearance.random_lighting(np.random.default_rng(seed + k)))
        for k, view in enumerate((MAIN_VIEW, OTHER_VIEW))
    ]
    return [_on_white(main.rgba), *[_on_white(v) for v in varied], fmt.encode_normals(main.normals, main.mask)]


def make_extended_figure(out: Path, seed: int, size: int) -> None:
    from d2im_tf.data.synth.shapes_extra import EXTRA_FAMILIES

    rows, titles = [], []
    for category, families in EXTRA_FAMILIES.items():
        for name, family in families.items():
            rows.append(extended_row(family, seed, size, len(rows)))
            titles.append(f"{CATEGORY_NAMES[category]}: {name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(rows, EXTENDED_COLUMNS, titles).save(out, optimize=True)


def make_figure(out: Path, seed: int, size: int) -> None:
    rows = [shape_row(category, seed, size) for category in shapes.FAMILIES]
    titles = [f"{CATEGORY_NAMES[category]} {category}" for category in shapes.FAMILIES]
    out.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(rows, COLUMNS, titles).save(out, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/dataset_grid.png"))
    parser.add_argument("--seed", type=int, default=2, help="2 shows every family's relief kinds well")
    parser.add_argument("--size", type=int, default=256, help="pixels per cell")
    parser.add_argument("--extended", action="store_true", help="the extended families with varied appearance")
    args = parser.parse_args(argv)
    (make_extended_figure if args.extended else make_figure)(args.out, args.seed, args.size)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
