"""The README's main job (`make demo`): reconstruct the example images with the bundled model.

Reads ``examples/*.png``, predicts each camera with the bundled camera network, and writes a mesh
and a preview PNG per image to ``demo_out/`` — the same ``d2im reconstruct`` a user runs on their
own images (its default ``--model`` is the bundled one, :data:`d2im_tf.bundled.BUNDLED_MODEL`).
"""

import sys
from pathlib import Path

from d2im_tf.cli import main

OUT = Path("demo_out")

if __name__ == "__main__":
    images = sorted(str(path) for path in Path("examples").glob("*.png"))
    print(f"d2im reconstruct {' '.join(images)} -o {OUT} --overwrite", flush=True)
    code = main(["reconstruct", *images, "-o", str(OUT), "--overwrite"])  # the demo's own folder: rerunnable
    if code == 0:
        print(f"meshes and previews in {OUT}/")
    sys.exit(code)
