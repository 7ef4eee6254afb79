"""``d2im train-camera`` as a script: ``python tools/train_camera.py --config configs/tiny.yaml``."""

import sys

from d2im_tf.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-camera", *sys.argv[1:]]))
