"""``d2im train-camera``: train the camera network (also ``tools/train_camera.py``).

Same conveniences as ``d2im train``: strategies, ``--resume``, checkpoints, TensorBoard, NaN guard.
The run folder is ``camera.out_dir``; pass it to ``d2im train --camera-run`` or ``d2im export``.
"""

from __future__ import annotations

from d2im_tf.commands.train import add_run_arguments, check_devices, run_network
from d2im_tf.config import config_from_arguments


def configure(parser) -> None:
    add_run_arguments(parser)


def run(args) -> int:
    config = config_from_arguments(args)
    check_devices(args)
    from d2im_tf.training.distribute import make_strategy

    strategy = make_strategy(args.devices)  # before any other TensorFlow work
    return 0 if run_network(config, "camera", strategy, args) is not None else 1
