"""``d2im train-camera``: train the camera network (also ``tools/train_camera.py``).

Same conveniences as ``d2im train``: strategies, ``--resume``, checkpoints, TensorBoard, NaN guard.
The run folder is ``camera.out_dir``; pass it to ``d2im train --camera-run`` or ``d2im export``.
"""
from __future__ import annotations

import sys

from d2im_tf.commands.train import add_run_arguments, check_devices
from d2im_tf.config import config_from_arguments


def configure(parser) -> None:
    add_run_arguments(parser)


def run(args) -> int:
    config = config_from_arguments(args)
    check_devices(args)
    from d2im_tf.training.distribute import make_strategy

    strategy = make_strategy(args.devices)
    from d2im_tf.training.camera import train_camera
    from d2im_tf.training.loop import TrainingDiverged

    try:
        train_camera(config, strategy, resume=args.resume, progress=not args.no_progress)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
