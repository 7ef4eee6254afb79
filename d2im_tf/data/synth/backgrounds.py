"""Procedurally textured backgrounds, and renders composited on them (a photo's stand-in with a known matte).

Kinds: ``"wood"`` (rings distorted by smooth noise), ``"checker"`` (a rotated two-colour checkerboard),
``"noise"`` (coloured multi-octave value noise), ``"stripes"`` (soft stripes at a random angle) and
``"gradient"`` (a linear gradient between two colours with fine grain). Colours are random, so some
backgrounds come close to the object's colour, as photos do.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

KINDS = ("wood", "checker", "noise", "stripes", "gradient")


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise ``[size, size]`` in [0, 1]: a random ``cells²`` grid upsampled bicubically."""
    grid = rng.uniform(0.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    image = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
    return np.clip(np.asarray(image), 0.0, 1.0)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.1, 0.95, 3)


def textured_background(rng: np.random.Generator, size: int, kind: str | None = None) -> np.ndarray:
    """uint8 RGB ``[size, size, 3]`` of one procedural texture (a random kind unless ``kind``)."""
    kind = kind or KINDS[rng.integers(len(KINDS))]
    y, x = np.mgrid[0:size, 0:size] / size  # [S, S] each, in [0, 1)
    angle = rng.uniform(0.0, np.pi)
    along = x * np.cos(angle) + y * np.sin(angle)
    a, b = _colour(rng), _colour(rng)
    if kind == "wood":
        distortion = _value_noise(rng, size, 4)
        radius = np.hypot(x - rng.uniform(-1, 2), y - rng.uniform(-1, 2))
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (rng.uniform(6, 14) * radius + 2.0 * distortion))
    elif kind == "checker":
        across = -x * np.sin(angle) + y * np.cos(angle)
        cells = rng.uniform(4, 12)
        t = ((np.floor(along * cells) + np.floor(across * cells)) % 2).astype(float)
    elif kind == "noise":
        t = sum(_value_noise(rng, size, 2**octave) / 2 ** (octave - 2) for octave in range(2, 6))
        t = (t - t.min()) / max(np.ptp(t), 1e-6)
    elif kind == "stripes":
        t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 10) * along)
    elif kind == "gradient":
        t = np.clip(along + rng.normal(0.0, 0.03, along.shape), 0.0, 1.0)
    else:
        raise ValueError(f"unknown background kind {kind!r}; one of {', '.join(KINDS)}")
    image = a * (1.0 - t[..., None]) + b * t[..., None]  # [S, S, 3]
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]``: ``rgba [H, W, 4]`` over ``background [H, W, 3]`` by its alpha."""
    alpha = rgba[..., 3:].astype(np.float64) / 255.0
    mixed = rgba[..., :3] * alpha + background.astype(np.float64) * (1.0 - alpha)
    return np.round(mixed).astype(np.uint8)
