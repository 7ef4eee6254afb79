"""Re-colour images into the synthetic renders' appearance, to tell appearance failures from shape ones.

    python tools/appearance_probe.py IN_DIR OUT_DIR [--mode grey|flat]
    d2im evaluate --images OUT_DIR -o OUT_EVAL

``grey`` keeps each image's shading but maps the foreground's luminance linearly onto [0.35, 0.9] (the
range of the generator's muted colours under its Lambert shading) in one mid-grey tint: textures, dark
materials and saturated colours go, the shading stays. ``flat`` fills the foreground with one grey
(0.7): only the outline stays. The foreground is :func:`d2im_tf.inference.matting.matte`'s; the
background becomes white. Writes PNGs (RGBA, the foreground as alpha) named as the inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOW, HIGH, FLAT = 0.35, 0.9, 0.7


def recolour(pixels: np.ndarray, mode: str) -> np.ndarray:
    """uint8 RGBA ``[H, W, 4]`` of any uint8 image in the probe's appearance (module docstring)."""
    from d2im_tf.inference.matting import matte

    rgba = matte(pixels)
    alpha = rgba[..., 3] > 127
    luminance = rgba[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0  # [H, W]
    if mode == "flat" or not alpha.any():
        value = np.full(luminance.shape, FLAT)
    else:
        low, high = np.percentile(luminance[alpha], [2, 98])
        value = LOW + (HIGH - LOW) * np.clip((luminance - low) / max(high - low, 1e-6), 0.0, 1.0)
    grey = np.where(alpha, value, 1.0)
    rgb = np.round(np.repeat(grey[..., None], 3, axis=-1) * 255).astype(np.uint8)
    return np.concatenate([rgb, np.where(alpha, 255, 0).astype(np.uint8)[..., None]], axis=-1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", help="folder of PNG/JPEG images")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--mode", choices=("grey", "flat"), default="grey")
    args = parser.parse_args(argv)
    from d2im_tf.data.disn_format import read_image, write_png
    from d2im_tf.evaluation.images import image_paths
    from d2im_tf.io import check_output_dir

    out = check_output_dir(args.out)
    for path in image_paths(args.images):
        write_png(out / f"{path.stem}.png", recolour(read_image(path), args.mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
