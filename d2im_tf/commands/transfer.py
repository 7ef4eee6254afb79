"""``d2im transfer``: the source image's surface details on the target image's coarse shape.

Writes ``OUT/transfer.<format>`` (the transfer), ``OUT/target.<format>`` (the target's own
reconstruction) and ``OUT/transfer_preview.png``; see :mod:`d2im_tf.applications.transfer`. Every
argument and input is checked before anything is written.
"""

from __future__ import annotations

from d2im_tf.commands.reconstruct import FORMATS, extraction_arguments, input_arguments, model_argument


def application_arguments(parser) -> None:
    """The options ``d2im transfer`` and ``d2im paste`` share."""
    model_argument(parser)
    parser.add_argument("-o", "--out", required=True, help="output folder")
    extraction_arguments(parser)
    input_arguments(parser, completion=False)
    parser.add_argument("--format", choices=FORMATS, default="obj", help="mesh file format (default obj)")
    parser.add_argument(
        "--target-camera",
        default=None,
        metavar="METADATA_LINE",
        help="the target's view as a rendering_metadata.txt line (default: the camera network)",
    )


def configure(parser) -> None:
    parser.add_argument("--source", required=True, help="image whose surface details are transferred")
    parser.add_argument("--target", required=True, help="image whose coarse shape receives them")
    parser.add_argument(
        "--where",
        choices=("front", "back", "both"),
        default="both",
        help="which displacement maps are transferred (default both)",
    )
    parser.add_argument(
        "--part",
        type=float,
        nargs=12,
        action="append",
        default=None,
        metavar="X",
        help="a part pair instead of the whole object (repeatable): the target box's "
        "lower and upper corners, then the source box's, 12 numbers in the "
        "normalised frames; points outside every target box keep the target's "
        "own details",
    )
    parser.add_argument(
        "--no-source-mask",
        action="store_true",
        help="transfer also where the corresponding point is seen on the source image's white "
        "background (default: keep the target's own details there)",
    )
    parser.add_argument(
        "--source-camera",
        default=None,
        metavar="METADATA_LINE",
        help="the source's view as a rendering_metadata.txt line (default: the camera network)",
    )
    application_arguments(parser)


def load_model(args):
    """The :class:`~d2im_tf.applications.fields.FieldModel` of ``--model`` with the extraction and input
    options."""
    from d2im_tf.applications.fields import FieldModel
    from d2im_tf.commands.reconstruct import input_options, surface_cleanup_options
    from d2im_tf.inference.reconstruct import Reconstructor

    options = dict(resolution=args.resolution, mode=args.mode, **surface_cleanup_options(args))
    return FieldModel(Reconstructor(args.model, **options, **input_options(args)))


def camera_rows(args, *names):
    """The parsed ``--<name>-camera`` lines (None where not given)."""
    from d2im_tf.commands.reconstruct import parse_camera_line

    rows = []
    for name in names:
        text = getattr(args, f"{name}_camera")
        rows.append(None if text is None else parse_camera_line(text))
    return rows


def run(args) -> int:
    from d2im_tf.applications.transfer import BoxPair
    from d2im_tf.data.disn_format import read_image
    from d2im_tf.io import check_output_dir

    source_row, target_row = camera_rows(args, "source", "target")
    parts = [BoxPair.from_numbers(numbers) for numbers in args.part or []]
    out = check_output_dir(args.out)
    source_pixels, target_pixels = read_image(args.source), read_image(args.target)
    model = load_model(args)
    for row in (source_row, target_row):
        model.reconstructor.require_camera(row)

    from d2im_tf.applications.outputs import preview, write_outputs
    from d2im_tf.applications.transfer import transfer_images

    source, target, composition = transfer_images(
        model, source_pixels, target_pixels, args.where, parts, not args.no_source_mask, source_row, target_row
    )
    meshes = {"target": model.extract(target), "transfer": model.extract(target, composition)}
    strip = preview({"source": source.image, "target": target.image}, meshes, target.view)
    for path in write_outputs(out, "transfer", meshes, strip, args.format):
        print(path)
    return 0
