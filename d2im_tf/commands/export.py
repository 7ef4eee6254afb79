"""``d2im export``: a training run's latest checkpoint → SavedModel in TF Serving's layout."""

from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="RUN_DIR",
        help="the SDF network's run folder (holds config.yaml and checkpoints/)",
    )
    parser.add_argument(
        "--camera-checkpoint",
        default=None,
        metavar="RUN_DIR",
        help="the camera network's run folder, bundled for image-only reconstruction",
    )
    parser.add_argument("--out", required=True, help="model folder, e.g. saved_models/d2im; writes OUT/<version>/")
    parser.add_argument("--version", type=int, default=None, help="version number ≥ 1 (default: the next free one)")


def run(args) -> int:
    from d2im_tf.deploy.export import export_saved_model, version_folder
    from d2im_tf.training.loop import load_run_config, require_checkpoint
    from d2im_tf.training.run import load_model

    version_folder(args.out, args.version)  # before any model is built
    require_checkpoint(args.checkpoint)
    if args.camera_checkpoint:
        require_checkpoint(args.camera_checkpoint)
    model = load_model(args.checkpoint, "sdf")
    camera_model = load_model(args.camera_checkpoint, "camera") if args.camera_checkpoint else None
    framing = load_run_config(args.checkpoint).data.framing_object_size
    print(f"exported {export_saved_model(model, args.out, camera_model, args.version, framing)}")
    return 0
