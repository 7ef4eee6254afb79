"""The README's main job (`make demo`): run what the project can do, end to end.

Today that is the environment and configuration report; it grows into image → mesh with the bundled
model as the model and reconstruction land.
"""
import sys

from d2im_tf.cli import main

if __name__ == "__main__":
    sys.exit(main(["info", "--config", "configs/default.yaml"]))
