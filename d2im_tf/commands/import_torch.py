"""``d2im import-torch``: the authors' PyTorch checkpoints → a SavedModel in the usual layout.

``--sdf best_model.pt.tar`` (D²IM-Net) and optionally ``--camera CAMmodel.pt.tar`` (camera network) are
read without PyTorch (:mod:`d2im_tf.interop.torch_checkpoint`), copied into reference-compatible Keras models
(:mod:`d2im_tf.interop.import_torch`; every key used, every shape checked) and exported with
:func:`d2im_tf.deploy.export.export_saved_model`, so ``d2im reconstruct`` and ``d2im evaluate`` take the result
like any other model. A file that does not fit is a one-line error naming it and the key (exit 2).
"""

from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument(
        "--sdf",
        required=True,
        metavar="CHECKPOINT",
        help="the authors' D²IM-Net checkpoint (e.g. best_model.pt.tar; .pt/.pth/.pt.tar)",
    )
    parser.add_argument(
        "--camera",
        default=None,
        metavar="CHECKPOINT",
        help="the authors' camera network checkpoint (e.g. CAMmodel.pt.tar), bundled for image-only reconstruction",
    )
    parser.add_argument(
        "--out", required=True, help="model folder, e.g. saved_models/d2im_authors; writes OUT/<version>/"
    )
    parser.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")


def run(args) -> int:
    from d2im_tf.deploy.export import export_saved_model
    from d2im_tf.interop.import_torch import import_camnet, import_d2im

    model, count = import_d2im(args.sdf)
    print(f"D²IM-Net: {count:,} values from {args.sdf}")
    camera_model = None
    if args.camera is not None:
        camera_model, count = import_camnet(args.camera)
        print(f"camera network: {count:,} values from {args.camera}")
    print(f"exported {export_saved_model(model, args.out, camera_model, args.version)}")
    return 0
