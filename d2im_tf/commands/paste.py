"""``d2im paste``: a logo dropped onto an image, reconstructed with the logo in relief.

Writes ``OUT/paste.<format>``, ``OUT/target.<format>`` (the target's own reconstruction),
``OUT/pasted.png`` (the target with the logo pasted in) and ``OUT/paste_preview.png``; see
:mod:`d2im_tf.applications.paste`. Every argument and input is checked before anything is written.
"""

from __future__ import annotations

from d2im_tf.commands.transfer import application_arguments, camera_rows, load_model


def configure(parser) -> None:
    parser.add_argument("target", help="the image the logo is pasted onto")
    parser.add_argument("--logo", required=True, help="the logo: RGBA (alpha = its foreground) or on white")
    parser.add_argument(
        "--at",
        type=float,
        nargs=2,
        required=True,
        metavar=("X", "Y"),
        help="the logo's centre in the target image's pixels (x right, y down)",
    )
    parser.add_argument(
        "--size",
        type=float,
        default=None,
        help="the logo's longer side in the target image's pixels (default: its own)",
    )
    parser.add_argument(
        "--blend",
        choices=("add", "replace"),
        default="add",
        help="under the logo, the front displacement is the target's plus the logo's (add, "
        "default) or the logo's (replace)",
    )
    application_arguments(parser)


def run(args) -> int:
    from d2im_tf.applications.paste import place
    from d2im_tf.data.disn_format import read_image
    from d2im_tf.io import check_output_dir

    (target_row,) = camera_rows(args, "target")
    out = check_output_dir(args.out)
    target_pixels, logo_pixels = read_image(args.target), read_image(args.logo)
    place(target_pixels.shape, logo_pixels.shape, args.at, args.size)  # before the slow model load
    model = load_model(args)
    model.reconstructor.require_camera(target_row)

    from d2im_tf.applications.outputs import preview, write_outputs
    from d2im_tf.applications.paste import logo_paste

    target, logo, composition, pasted = logo_paste(
        model, target_pixels, logo_pixels, args.at, args.size, args.blend, target_row
    )
    meshes = {"target": model.extract(target), "paste": model.extract(target, composition)}
    strip = preview({"pasted": pasted, "logo": logo.image}, meshes, target.view)
    for path in write_outputs(out, "paste", meshes, strip, args.format, {"pasted": pasted}):
        print(path)
    return 0
