"""``d2im train``: train the SDF network (also ``tools/train.py``), then export a SavedModel.

Uses ``MirroredStrategy`` over the visible GPUs, or over ``--devices N`` logical CPU devices, and
``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set. ``--resume`` continues the run in
``train.out_dir`` from its last checkpoint. Exit code 1 if the loss diverges (NaN/Inf).
"""

from __future__ import annotations

import sys
from pathlib import Path

from d2im_tf.config import add_config_arguments, config_from_arguments


def add_run_arguments(parser) -> None:
    """Options shared by ``train`` and ``train-camera``."""
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument(
        "--devices",
        type=int,
        default=0,
        help="data-parallel over N logical CPU devices (tests/CPU machines; GPUs are used automatically)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def configure(parser) -> None:
    add_run_arguments(parser)
    parser.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="after training, export a SavedModel to DIR/<version>/ (default: saved_models/<run name>)",
    )
    parser.add_argument("--no-export", action="store_true", help="do not export a SavedModel at the end")
    parser.add_argument(
        "--camera-run",
        default=None,
        metavar="RUN_DIR",
        help="a trained camera network's run folder, bundled into the export",
    )


def check_devices(args) -> None:
    from d2im_tf.errors import UserError

    if args.devices < 0:
        raise UserError(f"--devices must be 0 (automatic) or a positive number, got {args.devices}")


def run_network(config, network: str, strategy, args):
    """Train ``network`` (``d2im_tf.training.run.train``); None, after a one-line error, if it diverged or
    stopped (a full disk)."""
    from d2im_tf.training.callbacks import TrainingStopped
    from d2im_tf.training.run import train

    try:
        return train(config, network, strategy, resume=args.resume, progress=not args.no_progress)
    except TrainingStopped as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def run(args) -> int:
    config = config_from_arguments(args)
    check_devices(args)
    from d2im_tf.io import check_output_dir

    target = Path(args.export or Path("saved_models") / Path(config.train.out_dir).name)
    if not args.no_export:  # fail now rather than after training
        check_output_dir(target, "export folder")
    from d2im_tf.training.distribute import is_chief, make_strategy

    strategy = make_strategy(args.devices)  # before any other TensorFlow work
    from d2im_tf.deploy.export import export_saved_model
    from d2im_tf.training.loop import require_checkpoint
    from d2im_tf.training.run import load_model

    if args.camera_run:
        require_checkpoint(args.camera_run)
    model = run_network(config, "sdf", strategy, args)
    if model is None:
        return 1
    if not args.no_export and is_chief():
        if config.train.precision != "float32":  # export in float32: the final checkpoint in a float32 network
            model = load_model(config.train.out_dir, "sdf")
        camera_model = load_model(args.camera_run, "camera") if args.camera_run else None
        exported = export_saved_model(model, target, camera_model, framing_object_size=config.data.framing_object_size)
        print(f"exported {exported}")
    return 0
