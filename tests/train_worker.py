"""Run a tiny SDF training in this process and dump every replica's trainable weights (for test_training).

Usage: python train_worker.py DATA_ROOT OUT_DIR WEIGHTS.npz [--devices N] [--set KEY=VALUE ...]. Under
TF_CONFIG this is one worker of a MultiWorkerMirroredStrategy run.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from d2im_tf.training.distribute import make_strategy  # noqa: E402  (before TensorFlow)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("out")
    parser.add_argument("weights")
    parser.add_argument("--devices", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="more config overrides")
    args = parser.parse_args()
    strategy = make_strategy(args.devices)
    import numpy as np

    from d2im_tf.config import load_config
    from d2im_tf.training.run import train

    config = load_config(
        "configs/tiny.yaml",
        [
            f"data.root={args.root}",
            "data.categories=['03001627']",
            f"train.out_dir={args.out}",
            "train.epochs=1",
            "train.steps_per_epoch=3",
            "train.batch_size=2",
            *args.set,
        ],
    )
    model = train(config, "sdf", strategy, progress=False)
    replicas = {}
    # Trainable weights are mirrored and must agree everywhere. BatchNorm's moving statistics are
    # sync-on-read: each replica keeps its own and reads/saves average them, so they are not compared.
    for position, variable in enumerate(model.trainable_weights):  # keyed "replica/position:path"
        values = getattr(variable.value, "values", (variable.value,))  # MirroredVariable → per replica
        for index, value in enumerate(values):
            replicas[f"{index}/{position:04d}:{variable.path}"] = value.numpy()
    np.savez(args.weights, replicas=len(values), **replicas)


if __name__ == "__main__":
    main()
