"""``d2im info``: versions of the stack and the resolved configuration."""

from __future__ import annotations

import platform

import yaml

from d2im_tf.config import add_config_arguments, config_from_arguments


def configure(parser) -> None:
    add_config_arguments(parser)


def run(args) -> int:
    config = config_from_arguments(args)  # fail fast on a bad config before importing TF
    import h5py
    import keras
    import numpy
    import tensorflow as tf

    import d2im_tf

    print(f"d2im_tf     {d2im_tf.__version__}")
    print(f"python      {platform.python_version()}")
    print(f"tensorflow  {tf.__version__}")
    print(f"keras       {keras.__version__} (backend {keras.backend.backend()})")
    print(f"numpy       {numpy.__version__}")
    print(f"h5py        {h5py.__version__}")
    devices = ", ".join(d.name for d in tf.config.list_logical_devices()) or "none"
    print(f"devices     {devices}")
    print("config:")
    print(yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip())
    return 0
