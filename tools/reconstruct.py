"""``d2im reconstruct`` as a script: ``python tools/reconstruct.py IMAGE... --model saved_models/NAME -o OUT``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from d2im_tf.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["reconstruct", *sys.argv[1:]]))
