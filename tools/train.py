"""``d2im train`` as a script: ``python tools/train.py --config configs/tiny.yaml``."""

import sys

from d2im_tf.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
