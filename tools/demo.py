"""The README's main job (`make demo`): everything the project can do, end to end, in a few minutes.

Until a trained model is bundled, it builds a tiny synthetic dataset, validates it, trains a tiny
D²IM-Net and its camera network for a few steps, and exports them as a SavedModel — the same commands a
user runs at full size. Output goes to ``demo_out/``; a rerun starts from scratch.
"""
import shutil
import sys
from pathlib import Path

from d2im_tf.cli import main

OUT = Path("demo_out")
TINY = ["--config", "configs/tiny.yaml", "--set", f"data.root={OUT / 'data'}"]


def step(title: str, argv: list) -> None:
    print(f"\n== {title}: d2im {' '.join(argv)}", flush=True)
    code = main(argv)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    step("generate a tiny synthetic dataset", ["make-data", "--out", str(OUT / "data"), "--categories", "03001627",
                                               "04379243", "--shapes-per-category", "3", "--views", "4",
                                               "--image-size", "32", "--samples", "4096", "--seed", "0"])
    step("validate it", ["check-data", str(OUT / "data")])
    step("train the camera network", ["train-camera", *TINY, "--set", f"camera.out_dir={OUT / 'camera'}"])
    step("train D²IM-Net and export it", ["train", *TINY, "--set", f"train.out_dir={OUT / 'sdf'}",
                                          "--camera-run", str(OUT / "camera"), "--export", str(OUT / "saved_model")])
    print(f"\nDone: dataset, runs (TensorBoard logs in {OUT}/sdf/logs) and a SavedModel in {OUT}/saved_model.")
