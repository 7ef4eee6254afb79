"""``d2im convert``: an exported SavedModel → the encode / decode / camera models of a client, for
TFLite (LiteRT) or TF.js (:mod:`d2im_tf.deploy.convert`)."""

from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument(
        "saved_model",
        metavar="SAVED_MODEL",
        help="SavedModel folder: saved_models/<name> (latest version) or saved_models/<name>/<version>",
    )
    parser.add_argument("--to", required=True, metavar="TARGET", help="tflite or tfjs")
    parser.add_argument("-o", "--out", required=True, help="new output folder (must not exist)")
    parser.add_argument(
        "--chunk-points",
        type=int,
        default=8192,
        help="points per decode call, fixed in the converted model (default 8192)",
    )


def run(args) -> int:
    from d2im_tf.deploy.convert import DESCRIPTION_FILE, check_arguments, convert

    check_arguments(args.to, args.out, args.chunk_points)  # before the slow SavedModel load
    out = convert(args.saved_model, args.to, args.out, args.chunk_points)
    print(f"converted {args.saved_model} to {args.to}: {out} (description: {out / DESCRIPTION_FILE})")
    return 0
