"""``d2im evaluate``: reconstruct a test split and write per-category metric tables, or (``--images DIR``)
reconstruct a folder of images and measure the mesh's silhouette against each image's foreground.

With ``--images``: ``OUT/silhouette.md``, ``OUT/silhouette.csv`` and ``OUT/contact_sheet.png``
(:mod:`d2im_tf.evaluation.images`); no ground truth is needed.

Writes ``OUT/metrics.md`` and ``OUT/metrics.csv`` (per category and camera: IoU, Chamfer-L1,
ECD-3D, ECD-2D, F-score@1%, precision/recall@0.05; for the predicted camera also DISN's d_3D, d_2D and
the rotation error) and ``OUT/per_shape.csv``; see :mod:`d2im_tf.evaluation.evaluate` for frames and
the evaluation view. The model defaults to the bundled one. A missing ground-truth mesh is a
one-line error (exit 2).
"""

from __future__ import annotations

from d2im_tf.commands.reconstruct import (
    input_arguments,
    model_argument,
    surface_cleanup_arguments,
    surface_cleanup_options,
)


def configure(parser) -> None:
    model_argument(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="ROOT", help="DISN-layout dataset with meshes/")
    source.add_argument(
        "--images",
        metavar="DIR",
        help="a folder of PNG/JPEG images: silhouette IoU with the predicted camera, contact sheet",
    )
    parser.add_argument("--split", default="test", help="split list to evaluate (default test)")
    parser.add_argument("--split-dir", default=None, help="folder of the split lists (default ROOT/splits)")
    parser.add_argument("--categories", nargs="+", default=None, help="category ids (default: all with a split list)")
    parser.add_argument("--max-shapes", type=int, default=None, help="at most N ≥ 1 shapes per category")
    parser.add_argument(
        "--resolution", type=int, default=None, help="marching-cubes grid resolution (default 64, with --images 128)"
    )
    parser.add_argument(
        "--surface",
        choices=("detailed", "base"),
        default="detailed",
        help="with --data: evaluate the model's output (default) or the zero set of the base field f_B alone, "
        "the coarse shape before the displacement maps are added",
    )
    surface_cleanup_arguments(parser)
    input_arguments(
        parser,
        None,
        "auto with --images; with --data, whose renders are the training's kind, off unless the model "
        "was trained re-framed (then its size)",
    )
    parser.add_argument(
        "--no-input-panel",
        action="store_true",
        help="with --images: leave the inputs out of the contact sheet (images you may not share)",
    )
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_images(args) -> int:
    """``--images DIR``: silhouette tables and the contact sheet."""
    from pathlib import Path

    from d2im_tf.commands.reconstruct import input_options
    from d2im_tf.errors import UserError
    from d2im_tf.io import check_output_dir

    folder = Path(args.images)
    if args.surface != "detailed":
        raise UserError("--surface base needs --data: the silhouette of --images measures the model's output")
    if not folder.is_dir():
        raise UserError(f"{folder}: image folder not found" if not folder.exists() else f"{folder}: not a folder")
    inputs = input_options(args)
    resolution = 128 if args.resolution is None else args.resolution

    from d2im_tf.evaluation.images import evaluate_images, image_paths, markdown_table, write_image_reports
    from d2im_tf.inference.reconstruct import Reconstructor, check_resolution

    paths = image_paths(folder)
    if not paths:
        raise UserError(f"{folder}: no PNG or JPEG images")
    check_resolution(resolution, "coarse_to_fine")
    out = check_output_dir(args.out)
    reconstructor = Reconstructor(
        args.model,
        resolution=resolution,
        **surface_cleanup_options(args),
        **inputs,
    )
    reconstructor.require_camera(None)
    rows, cells = evaluate_images(reconstructor, paths, progress=not args.no_progress)
    written = write_image_reports(rows, cells, out, inputs=not args.no_input_panel)
    print(markdown_table(rows))
    print(f"wrote {written['markdown']}, {written['csv']} and {written['sheet']}")
    return 0 if len(rows) == len(paths) else 2


def run(args) -> int:
    from d2im_tf.data.disn_format import DatasetLayout
    from d2im_tf.errors import UserError
    from d2im_tf.io import check_output_dir

    if args.images is not None:
        return run_images(args)
    args.resolution = 64 if args.resolution is None else args.resolution
    from d2im_tf.commands.reconstruct import input_options

    # a dataset's renders are the training renders' kind: re-framed only for a model trained re-framed
    inputs = input_options(args, object_size="trained")

    if args.max_shapes is not None and args.max_shapes < 1:
        raise UserError(f"--max-shapes must be at least 1, got {args.max_shapes}")
    layout = DatasetLayout(args.data, args.split_dir)
    if not layout.root.is_dir():
        raise UserError(f"{layout.root}: dataset folder not found")
    check_output_dir(args.out)

    from d2im_tf.evaluation.evaluate import evaluate, markdown_tables, split_pairs, summarise, write_reports
    from d2im_tf.inference.reconstruct import Reconstructor, check_resolution

    check_resolution(args.resolution, "coarse_to_fine")
    if not split_pairs(layout, args.split, args.categories, args.max_shapes):
        raise UserError(f"{args.data}: no shapes in split {args.split!r}")
    reconstructor = Reconstructor(
        args.model,
        resolution=args.resolution,
        **surface_cleanup_options(args),
        **inputs,
    )
    rows = evaluate(
        reconstructor,
        layout,
        args.split,
        args.categories,
        args.max_shapes,
        progress=not args.no_progress,
        surface=args.surface,
    )
    paths = write_reports(rows, args.out, args.surface)
    print(markdown_tables(summarise(rows), args.surface))
    print(f"wrote {paths['markdown']}, {paths['csv']} and {paths['per_shape']}")
    return 0
