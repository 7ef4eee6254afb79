"""``d2im make-data``: write a synthetic detail-rich dataset (or convert user meshes) in DISN's layout.

``OUT`` must be new or empty, or hold a dataset made with the same settings (``OUT/make_data.json``):
running the same command again — after it was killed, say — writes only the shapes it had not
finished (their metadata file, written last, is missing), with the bytes of an uninterrupted run. The
one setting that may change is a larger ``--extra-train-shapes`` on a finished dataset: that generates
only the new training shapes, so a study set can grow without touching its test split. Likewise,
``--coarse-sdf`` added to a generated dataset writes only each shape's relief-free mesh and SDF.
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
    parser.add_argument(
        "--categories",
        nargs="+",
        default=list(SYNTHETIC_CATEGORIES),
        help="ShapeNet ids: " + ", ".join(f"{c} {name}" for c, name in CATEGORY_NAMES.items()),
    )
    parser.add_argument(
        "--shapes-per-category",
        type=int,
        default=10,
        help="shapes per category, split into train and test by --test-fraction",
    )
    parser.add_argument(
        "--extra-train-shapes",
        type=int,
        default=0,
        metavar="N",
        help="N more shapes per category for the training split only (the test split stays "
        "that of the first --shapes-per-category); raising N on a finished dataset "
        "generates only the new shapes",
    )
    parser.add_argument(
        "--from-meshes",
        default=None,
        metavar="DIR",
        help="convert meshes DIR/<category>/<shape>/model.obj instead of generating shapes",
    )
    parser.add_argument(
        "--transfer-pairs",
        type=int,
        default=0,
        metavar="N",
        help="instead of a dataset, write N pairs per category for the detail-transfer benchmark: a "
        "target, a source differing in relief and stretched, the target rebuilt with the "
        "source's relief, its coarse shape, and one render each (d2im_tf.data.synth.pairs)",
    )
    parser.add_argument("--views", type=int, default=36, help="views per shape (DISN: 36)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=32768, help="SDF samples per shape (DISN: 32768)")
    parser.add_argument(
        "--resolution", type=int, default=192, help="marching-cubes cells along a shape's bounding diagonal"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (shapes run in parallel)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    looks = parser.add_argument_group("variety (off by default; recorded in make_data.json when set)")
    looks.add_argument(
        "--appearance",
        choices=["plain", "varied"],
        default="plain",
        help="varied: per-part materials (wood, fabric, metal, plastic, paint), random lights, "
        "3×3 supersampled RGB with anti-aliased edges; normal maps, depth and SDF unchanged",
    )
    looks.add_argument(
        "--plain-share",
        type=float,
        default=0.0,
        metavar="P",
        help="with --appearance varied: keep the plain render (one muted colour, Lambert shading) for "
        "this share of the views, at random (default 0)",
    )
    looks.add_argument(
        "--render-sizes",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="with --appearance varied: render each view's RGB at one of these sizes (e.g. 137 "
        "224, other datasets' sizes) and resample it to --image-size",
    )
    looks.add_argument(
        "--framing",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="set each view's camera distance so the object spans a random share in [LO, HI] of "
        "the image side (e.g. 0.45 0.9) instead of DISN's distance range",
    )
    looks.add_argument(
        "--shape-families",
        default="classic",
        metavar="{classic,extended,FAMILY}",
        help="extended: 60%% of the shapes from the families of shapes_extra (armchairs, "
        "cantilever, shell and swivel chairs, turned legs, round/oval/trestle tables, "
        "cabinets with handles, upholstered sofas); a family's name: every shape from it "
        "(e.g. slender: long tables on four thin legs at the corners)",
    )
    parser.add_argument(
        "--coarse-sdf",
        action="store_true",
        help="also write each shape without its relief: its mesh (coarse.obj) and its SDF at the same "
        "samples (pc_sdf_coarse, pc_sdf_uniform_coarse), for model.base_target: coarse_sdf and the "
        "relief error of evaluate; added to a generated dataset, only these are written",
    )


def _validate(args) -> None:
    positive = {
        "--views": args.views,
        "--image-size": args.image_size,
        "--samples": args.samples,
        "--resolution": args.resolution,
        "--workers": args.workers,
        "--shapes-per-category": args.shapes_per_category,
    }
    for name, value in positive.items():
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    from d2im_tf.data.check import MIN_VIEW_SIZE

    if args.image_size < MIN_VIEW_SIZE:  # what check-data and training accept
        raise UserError(
            f"--image-size must be at least {MIN_VIEW_SIZE} (smaller renders hold no detail), got {args.image_size}"
        )
    if args.samples % 4:
        raise UserError(f"--samples must be a multiple of 4 (four bands), got {args.samples}")
    if not 0.0 <= args.test_fraction < 1.0:
        raise UserError(f"--test-fraction must be in [0, 1), got {args.test_fraction}")
    if args.extra_train_shapes < 0:
        raise UserError(f"--extra-train-shapes must be at least 0, got {args.extra_train_shapes}")
    if args.from_meshes and args.extra_train_shapes:
        raise UserError("--extra-train-shapes generates shapes; it cannot be used with --from-meshes")
    if args.plain_share and args.appearance != "varied":
        raise UserError("--plain-share needs --appearance varied")
    if not 0.0 <= args.plain_share < 1.0:
        raise UserError(f"--plain-share must be in [0, 1), got {args.plain_share}")
    if args.render_sizes and args.appearance != "varied":
        raise UserError("--render-sizes needs --appearance varied")
    if args.render_sizes and min(args.render_sizes) < 8:
        raise UserError(f"--render-sizes must be at least 8, got {min(args.render_sizes)}")
    if args.framing and not 0.05 <= args.framing[0] <= args.framing[1] <= 1.0:
        raise UserError(f"--framing needs 0.05 <= LO <= HI <= 1, got {args.framing[0]} {args.framing[1]}")
    if args.from_meshes and args.coarse_sdf:
        raise UserError("--coarse-sdf needs generated shapes (only the generator knows a shape without its relief)")
    if args.transfer_pairs and args.coarse_sdf:
        raise UserError("--coarse-sdf writes datasets; the transfer pairs already hold each target's coarse.obj")
    if args.from_meshes and args.shape_families != "classic":
        raise UserError("--shape-families chooses generated shapes; it cannot be used with --from-meshes")
    from d2im_tf.data.synth.shapes_extra import family_names

    choices = ["classic", "extended", *family_names()]
    if args.shape_families not in choices:
        raise UserError(f"--shape-families {args.shape_families}: unknown; one of {', '.join(choices)}")
    if args.transfer_pairs < 0:
        raise UserError(f"--transfer-pairs must be at least 0, got {args.transfer_pairs}")
    if args.transfer_pairs and (args.from_meshes or args.extra_train_shapes):
        raise UserError(
            "--transfer-pairs writes generated pairs; it cannot be used with --from-meshes or --extra-train-shapes"
        )
    if args.from_meshes and not Path(args.from_meshes).is_dir():
        raise UserError(f"{args.from_meshes}: not a directory")


def settings_record(args) -> dict:
    """The arguments that decide a dataset's content (not ``--workers``), as recorded in ``OUT/make_data.json``."""
    source = (
        {"from_meshes": str(Path(args.from_meshes).resolve())}
        if args.from_meshes
        else {"categories": list(args.categories), "shapes_per_category": args.shapes_per_category}
    )
    if args.extra_train_shapes:  # absent when 0, so records written before the option still match
        source["extra_train_shapes"] = args.extra_train_shapes
    if args.coarse_sdf:  # likewise
        source["coarse_sdf"] = True
    variety = {key: value for key, value in variety_settings(args).items() if value != VARIETY_DEFAULTS[key]}
    return {
        **source,
        "views": args.views,
        "image_size": args.image_size,
        "samples": args.samples,
        "resolution": args.resolution,
        "seed": args.seed,
        "test_fraction": args.test_fraction,
        **variety,
    }  # variety options only when set, so records written before them still match


VARIETY_DEFAULTS = {
    "appearance": "plain",
    "plain_share": 0.0,
    "render_sizes": None,
    "framing": None,
    "shape_families": "classic",
}


def variety_settings(args) -> dict:
    """The appearance, framing and shape-family options as JSON values."""
    return {
        "appearance": args.appearance,
        "plain_share": args.plain_share,
        "render_sizes": list(args.render_sizes) if args.render_sizes else None,
        "framing": list(args.framing) if args.framing else None,
        "shape_families": args.shape_families,
    }


def check_out_folder(out: Path, record: dict) -> int:
    """Refuse to mix datasets: ``out`` must be new, empty, or made by make-data with the same settings
    (re-running the same command — after it was killed, say — writes the shapes it had not finished).

    Returns the index of the first new shape of each category when a finished dataset grows by a larger
    ``--extra-train-shapes`` (its split lists are then rewritten once the new shapes are in), else 0."""
    from d2im_tf.data.disn_format import DatasetLayout
    from d2im_tf.io import check_output_dir

    check_output_dir(out, "dataset folder")
    if not out.is_dir() or not any(out.iterdir()):
        return 0
    path = out / RECORD
    try:
        earlier = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{out}: not empty, and not a dataset written by make-data; choose a new or empty folder"
        ) from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable ({error.__class__.__name__}); choose a new or empty folder") from None
    defaults = {"extra_train_shapes": 0, "coarse_sdf": False}
    earlier, record = {**defaults, **earlier}, {**defaults, **record}
    had = earlier["extra_train_shapes"]
    # --coarse-sdf may be added (make_synthetic writes what the shapes lack)
    adding_coarse = record["coarse_sdf"] and not earlier["coarse_sdf"]
    # the settings that differ, --extra-train-shapes last (the message names the first)
    differing = sorted(
        (
            key
            for key in set(earlier) | set(record)
            if earlier.get(key) != record.get(key) and not (key == "coarse_sdf" and adding_coarse)
        ),
        key=lambda k: (k == "extra_train_shapes", k),
    )
    if differing == ["extra_train_shapes"] and record["extra_train_shapes"] > had:
        layout = DatasetLayout(out)
        if not all(layout.split_path(c, s).is_file() for c in record.get("categories", []) for s in ("train", "test")):
            raise UserError(
                f"{out}: an earlier make-data run into it did not finish (no split lists); "
                "run that command again before adding --extra-train-shapes"
            )
        return record["shapes_per_category"] + had
    if differing:
        key = differing[0]
        option = "--" + key.replace("_", "-")
        if isinstance(earlier.get(key), bool):  # a flag: say with or without it
            made = f"{'with' if earlier[key] else 'without'} {option}"
        else:
            made = f"with {option} {earlier.get(key)}, not {record.get(key)}"
        raise UserError(
            f"{out}: holds a dataset made {made}; "
            "choose a new or empty folder (only the same command may run again into it)"
        )
    return 0


def run(args) -> int:
    _validate(args)
    if args.transfer_pairs:
        return _write_pairs(args)
    out, record = Path(args.out), settings_record(args)
    first_shape = check_out_folder(out, record)
    from d2im_tf.data.disn_format import DatasetLayout
    from d2im_tf.data.synth import generate
    from d2im_tf.io import atomic_path

    made = [] if out.exists() else [out, *[p for p in out.parents if not p.exists()]]  # folders this run creates
    if first_shape:  # growing: the split lists go until the new shapes are in, so they mark a finished dataset
        layout = DatasetLayout(out)
        for category in args.categories:
            for split in ("train", "test"):
                layout.split_path(category, split).unlink()
    with atomic_path(out / RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    try:
        _generate(args, generate)
    except UserError:
        if [p.name for p in out.iterdir()] == [RECORD]:  # refused before any shape was written
            (out / RECORD).unlink()
            for folder in made:
                folder.rmdir()
        raise
    print(f"wrote {args.out}")
    return 0


def _generate(args, generate) -> None:
    settings = generate.Settings(
        out=Path(args.out),
        views=args.views,
        image_size=args.image_size,
        samples=args.samples,
        seed=args.seed,
        resolution=args.resolution,
        appearance=args.appearance == "varied",
        plain_share=args.plain_share,
        render_sizes=tuple(args.render_sizes or ()),
        framing=tuple(args.framing) if args.framing else None,
        families=args.shape_families,
        coarse_sdf=args.coarse_sdf,
    )
    if args.from_meshes:
        notes = generate.make_from_meshes(settings, Path(args.from_meshes), args.workers, args.test_fraction)
        for note in notes:
            print(note, file=sys.stderr)
        skipped = sum(note.startswith("skipped") for note in notes)
        if skipped:
            raise UserError(f"{skipped} mesh(es) skipped; the others are in {args.out}")
    else:
        generate.make_synthetic(
            settings,
            args.categories,
            args.shapes_per_category,
            args.workers,
            args.test_fraction,
            args.extra_train_shapes,
        )


def _write_pairs(args) -> int:
    """``--transfer-pairs``: into a new or empty folder (the pairs' layout is not a dataset's)."""
    from d2im_tf.data.synth.pairs import make_pairs
    from d2im_tf.data.synth.shapes import FAMILIES
    from d2im_tf.io import check_output_dir

    out = check_output_dir(Path(args.out), "pairs folder")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out}: not empty; --transfer-pairs writes into a new or empty folder")
    unknown = [c for c in args.categories if c not in FAMILIES]
    if unknown:
        raise UserError(f"--categories: no procedural family for {', '.join(unknown)}")
    make_pairs(out, args.categories, args.transfer_pairs, args.seed, args.image_size, args.resolution)
    print(f"wrote {args.out}")
    return 0
