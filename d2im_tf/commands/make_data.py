"""``d2im make-data``: write a synthetic detail-rich dataset (or convert user meshes) in DISN's layout."""
from __future__ import annotations

import sys
from pathlib import Path

from d2im_tf.errors import UserError


def configure(parser) -> None:
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--categories", nargs="+", default=["03001627", "04379243", "02933112", "04256520"],
                        help="ShapeNet ids: 03001627 chair, 04379243 table, 02933112 cabinet, 04256520 sofa")
    parser.add_argument("--shapes-per-category", type=int, default=10)
    parser.add_argument("--from-meshes", default=None, metavar="DIR",
                        help="convert meshes DIR/<category>/<shape>/model.obj instead of generating shapes")
    parser.add_argument("--views", type=int, default=36, help="views per shape (DISN: 36)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=32768, help="SDF samples per shape (DISN: 32768)")
    parser.add_argument("--resolution", type=int, default=192,
                        help="marching-cubes cells along a shape's bounding diagonal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (shapes run in parallel)")
    parser.add_argument("--test-fraction", type=float, default=0.2)


def _validate(args) -> None:
    positive = {"--views": args.views, "--image-size": args.image_size, "--samples": args.samples,
                "--resolution": args.resolution, "--workers": args.workers,
                "--shapes-per-category": args.shapes_per_category}
    for name, value in positive.items():
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if args.samples % 4:
        raise UserError(f"--samples must be a multiple of 4 (four bands), got {args.samples}")
    if not 0.0 <= args.test_fraction < 1.0:
        raise UserError(f"--test-fraction must be in [0, 1), got {args.test_fraction}")
    if args.from_meshes and not Path(args.from_meshes).is_dir():
        raise UserError(f"{args.from_meshes}: not a directory")


def run(args) -> int:
    _validate(args)
    from d2im_tf.data import generate

    settings = generate.Settings(out=Path(args.out), views=args.views, image_size=args.image_size,
                                 samples=args.samples, seed=args.seed, resolution=args.resolution)
    if args.from_meshes:
        notes = generate.make_from_meshes(settings, Path(args.from_meshes), args.workers, args.test_fraction)
        for note in notes:
            print(note, file=sys.stderr)
        skipped = sum(note.startswith("skipped") for note in notes)
        if skipped:
            raise UserError(f"{skipped} mesh(es) skipped; the others are in {args.out}")
    else:
        generate.make_synthetic(settings, args.categories, args.shapes_per_category, args.workers,
                                args.test_fraction)
    print(f"wrote {args.out}")
    return 0
