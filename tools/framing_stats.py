"""How large and where the object sits in images: the synthetic training renders vs a folder of images.

    python tools/framing_stats.py --synthetic 10 --views 12 --image-size 128    # renders as make-data writes them
    python tools/framing_stats.py --images examples/ other_renders/

Prints, per source, the object size (the foreground box's longer side over the image's side; see
:mod:`d2im_tf.data.framing`) and the centre offset: min, 10th percentile, median, 90th percentile, max.
The synthetic renders are made exactly as ``d2im make-data --seed S`` makes shapes 0..N-1 of each
category (same meshes, colours and views), without writing the dataset. The median of the synthetic
sizes is the default object size the reconstruction normalises inputs to
(:data:`d2im_tf.inference.reconstruct.TRAINING_OBJECT_SIZE`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from d2im_tf.data import framing  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def synthetic_masks(count: int, views: int, image_size: int, seed: int, categories):
    """Yield ``(category, mask [S, S])`` of the first ``count`` synthetic shapes per category."""
    from d2im_tf.data.render import Renderer, random_views
    from d2im_tf.data.synth.generate import Settings, shape_streams, synthetic_shape

    settings = Settings(out=Path("."), views=views, image_size=image_size, seed=seed)
    for category in categories:
        for index in range(count):
            streams = shape_streams(seed, category, index)
            mesh = synthetic_shape(settings, category, streams).mesh
            renderer = Renderer(mesh)
            for row in random_views(streams["views"], views):
                yield category, renderer.render(row, image_size).mask


def describe(name: str, sizes, offsets) -> str:
    sizes, offsets = np.asarray(sizes), np.asarray(offsets)
    q = np.percentile(sizes, [0, 10, 50, 90, 100])
    return (
        f"{name:32s} n={len(sizes):4d}  size min {q[0]:.2f} p10 {q[1]:.2f} median {q[2]:.2f} "
        f"p90 {q[3]:.2f} max {q[4]:.2f}   offset median {np.median(offsets):.3f} max {offsets.max():.3f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=0, metavar="N", help="N synthetic shapes per category")
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--categories", nargs="+", default=["03001627", "04379243", "02933112", "04256520"])
    parser.add_argument("--images", nargs="*", default=[], metavar="DIR", help="folders of images")
    args = parser.parse_args(argv)
    if args.synthetic:
        per_category: dict[str, tuple[list, list]] = {}
        for category, mask in synthetic_masks(args.synthetic, args.views, args.image_size, args.seed, args.categories):
            sizes, offsets = per_category.setdefault(category, ([], []))
            sizes.append(framing.object_size(mask))
            offsets.append(framing.object_offset(mask))
        for category, (sizes, offsets) in per_category.items():
            print(describe(f"synthetic {category}", sizes, offsets))
        print(
            describe(
                "synthetic (all)",
                [s for v in per_category.values() for s in v[0]],
                [o for v in per_category.values() for o in v[1]],
            )
        )
    from d2im_tf.data.disn_format import read_image

    for folder in args.images:
        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        masks = [framing.foreground_mask(read_image(p)) for p in paths]
        for path, mask in zip(paths, masks):
            print(f"  {path.name:30s} size {framing.object_size(mask):.2f}  offset {framing.object_offset(mask):.3f}")
        print(describe(str(folder), [framing.object_size(m) for m in masks], [framing.object_offset(m) for m in masks]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
