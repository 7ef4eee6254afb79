"""``d2im make-data``: write a synthetic detail-rich dataset (or convert user meshes) in DISN's layout.

``OUT`` must be new or empty, or hold a dataset made with the same settings (``OUT/make_data.json``):
running the same command again — after it was killed, say — rewrites the same bytes. The one setting
that may change is a larger ``--extra-train-shapes`` on a finished dataset: that generates only the
new training shapes, so a study set can grow without touching its test split.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from d2im_tf.data.categories import CATEGORY_NAMES, SYNTHETIC_CATEGORIES
from d2im_tf.errors import UserError

RECORD = "make_data.json"  # the settings a dataset was made with, so a second run cannot mix in others


def configure(parser) -> None:
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--categories", nargs="+", default=list(SYNTHETIC_CATEGORIES),
                        help="ShapeNet ids: " + ", ".join(f"{c} {name}" for c, name in CATEGORY_NAMES.items()))
    parser.add_argument("--shapes-per-category", type=int, default=10,
                        help="shapes per category, split into train and test by --test-fraction")
    parser.add_argument("--extra-train-shapes", type=int, default=0, metavar="N",
                        help="N more shapes per category for the training split only (the test split stays "
                             "that of the first --shapes-per-category); raising N on a finished dataset "
                             "generates only the new shapes")
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
    from d2im_tf.data.check import MIN_VIEW_SIZE

    if args.image_size < MIN_VIEW_SIZE:  # what check-data and training accept
        raise UserError(f"--image-size must be at least {MIN_VIEW_SIZE} (smaller renders hold no detail), "
                        f"got {args.image_size}")
    if args.samples % 4:
        raise UserError(f"--samples must be a multiple of 4 (four bands), got {args.samples}")
    if not 0.0 <= args.test_fraction < 1.0:
        raise UserError(f"--test-fraction must be in [0, 1), got {args.test_fraction}")
    if args.extra_train_shapes < 0:
        raise UserError(f"--extra-train-shapes must be at least 0, got {args.extra_train_shapes}")
    if args.from_meshes and args.extra_train_shapes:
        raise UserError("--extra-train-shapes generates shapes; it cannot be used with --from-meshes")
    if args.from_meshes and not Path(args.from_meshes).is_dir():
        raise UserError(f"{args.from_meshes}: not a directory")


def settings_record(args) -> dict:
    """The arguments that decide a dataset's content (not ``--workers``), as recorded in ``OUT/make_data.json``."""
    source = {"from_meshes": str(Path(args.from_meshes).resolve())} if args.from_meshes else {
        "categories": list(args.categories), "shapes_per_category": args.shapes_per_category}
    if args.extra_train_shapes:  # absent when 0, so records written before the option still match
        source["extra_train_shapes"] = args.extra_train_shapes
    return {**source, "views": args.views, "image_size": args.image_size, "samples": args.samples,
            "resolution": args.resolution, "seed": args.seed, "test_fraction": args.test_fraction}


def check_out_folder(out: Path, record: dict) -> int:
    """Refuse to mix datasets: ``out`` must be new, empty, or made by make-data with the same settings
    (re-running the same command — after it was killed, say — rewrites the same files).

    Returns the index of the first shape of each category to write: 0, except when a finished dataset
    grows by a larger ``--extra-train-shapes`` (its shapes are kept and only the new ones written)."""
    from d2im_tf.data.disn_format import DatasetLayout, check_output_dir

    check_output_dir(out, "dataset folder")
    if not out.is_dir() or not any(out.iterdir()):
        return 0
    path = out / RECORD
    try:
        earlier = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{out}: not empty, and not a dataset written by make-data; "
                        "choose a new or empty folder") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable ({error.__class__.__name__}); choose a new or empty folder") from None
    earlier, record = {"extra_train_shapes": 0, **earlier}, {"extra_train_shapes": 0, **record}
    had = earlier["extra_train_shapes"]
    # the settings that differ, --extra-train-shapes last (the message names the first)
    differing = sorted((key for key in set(earlier) | set(record) if earlier.get(key) != record.get(key)),
                       key=lambda k: (k == "extra_train_shapes", k))
    if differing == ["extra_train_shapes"] and record["extra_train_shapes"] > had:
        layout = DatasetLayout(out)
        if not all(layout.split_path(c, s).is_file() for c in record.get("categories", []) for s in ("train", "test")):
            raise UserError(f"{out}: an earlier make-data run into it did not finish (no split lists); "
                            "run that command again before adding --extra-train-shapes")
        return record["shapes_per_category"] + had
    if differing:
        key = differing[0]
        option = "--" + key.replace("_", "-")
        raise UserError(f"{out}: holds a dataset made with {option} {earlier.get(key)}, not {record.get(key)}; "
                        "choose a new or empty folder (only the same command may run again into it)")
    return 0


def run(args) -> int:
    _validate(args)
    out, record = Path(args.out), settings_record(args)
    first_shape = check_out_folder(out, record)
    from d2im_tf.data.disn_format import DatasetLayout, atomic_path
    from d2im_tf.data.synth import generate

    made = [] if out.exists() else [out, *[p for p in out.parents if not p.exists()]]  # folders this run creates
    if first_shape:  # growing: the split lists go until the new shapes are in, so they mark a finished dataset
        layout = DatasetLayout(out)
        for category in args.categories:
            for split in ("train", "test"):
                layout.split_path(category, split).unlink()
    with atomic_path(out / RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    try:
        _generate(args, generate, first_shape)
    except UserError:
        if [p.name for p in out.iterdir()] == [RECORD]:  # refused before any shape was written
            (out / RECORD).unlink()
            for folder in made:
                folder.rmdir()
        raise
    print(f"wrote {args.out}")
    return 0


def _generate(args, generate, first_shape: int) -> None:
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
                                args.test_fraction, args.extra_train_shapes, first_shape)
