"""Choosing the ``tf.distribute`` strategy for a training run.

``TF_CONFIG`` set → ``MultiWorkerMirroredStrategy`` (one process per worker); otherwise
``MirroredStrategy`` over the visible GPUs, or over ``devices`` logical CPU devices when asked (so
data-parallel training can be tested on a CPU); otherwise the default single-device strategy. Must be
called before TensorFlow runs any op (logical devices cannot be changed afterwards).

Several replicas in one process on the CPU need oneDNN's custom kernels off: with them on, two
replicas running at once corrupt the heap (seen with TF 2.21: "double free or corruption").
``make_strategy`` sets ``TF_ENABLE_ONEDNN_OPTS=0`` for that case, which only takes effect if
TensorFlow is not imported yet — so call it first.
"""

from __future__ import annotations

import json
import os
import sys


def make_strategy(devices: int = 0):
    """The strategy for this process; ``devices`` > 1 splits the CPU into that many logical devices."""
    if devices > 1:
        if "tensorflow" in sys.modules and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
            print(
                "warning: TensorFlow was imported before make_strategy(); oneDNN stays on and CPU replicas may crash",
                file=sys.stderr,
            )
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        if devices > 1:
            _split_cpu(devices)
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    if devices > 1:
        _split_cpu(devices)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(devices)])
    return tf.distribute.get_strategy()


def _split_cpu(devices: int) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def _task() -> tuple[str, int, bool]:
    """This process's task type and index in ``TF_CONFIG`` (a lone process is the chief), and
    whether the cluster has a dedicated chief."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    return task.get("type", "chief"), task.get("index", 0), "chief" in config.get("cluster", {})


def is_chief() -> bool:
    """True for the process that writes logs, previews and the real checkpoints."""
    kind, index, has_chief = _task()
    return kind == "chief" or (kind == "worker" and index == 0 and not has_chief)


def worker_id() -> str:
    """``<type>_<index>`` of this process, e.g. ``worker_1``."""
    kind, index, _ = _task()
    return f"{kind}_{index}"
