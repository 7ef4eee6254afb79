"""Surface detail: random height fields over a panel's front face.

A :class:`Relief` is a sum of *layers* — grooves, a moulded frame, a lattice of bumps or dimples,
concentric rings, rows of glyph-like strokes — each a mask in [0, 1] with a signed amplitude
(positive: embossed, outward; negative: engraved). Heights are functions of the panel's local
face coordinates ``(x, y)`` in the same length unit as the panel, and fade to zero in a border
along the panel's edges so detail never reaches a silhouette edge. :mod:`d2im_tf.data.synth.shapes`
turns a height ``h(x, y)`` into a displacement of the panel's front face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _plateau(distance: np.ndarray, width: float) -> np.ndarray:
    """1 within ``0.5·width`` of a mark's centre line, a smooth (C¹) ramp to 0 at ``width``."""
    t = np.clip((distance / width - 0.5) / 0.5, 0.0, 1.0)
    return 1.0 - t * t * (3.0 - 2.0 * t)


def _segment_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance from points ``[N, 2]`` to segments ``[N, K, 2]`` → ``[N, K]``."""
    direction = end - start
    length2 = np.maximum(np.sum(direction**2, axis=-1), 1e-18)
    offset = points[:, None, :] - start
    t = np.clip(np.sum(offset * direction, axis=-1) / length2, 0.0, 1.0)
    return np.linalg.norm(offset - t[..., None] * direction, axis=-1)


@dataclass(frozen=True)
class Grooves:
    """Parallel straight lines at ``angle`` (radians), ``spacing`` apart, ``width`` wide."""

    spacing: float
    width: float
    angle: float

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        across = x * np.cos(self.angle) + y * np.sin(self.angle)
        phase = across / self.spacing - np.round(across / self.spacing)
        return _plateau(np.abs(phase) * self.spacing, self.width)


@dataclass(frozen=True)
class Frame:
    """A rectangular moulding ``inset`` from the panel's edges (half-extents ``hx, hy``)."""

    hx: float
    hy: float
    inset: float
    width: float

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        edge = np.maximum(np.abs(x) - (self.hx - self.inset), np.abs(y) - (self.hy - self.inset))
        return _plateau(np.abs(edge), self.width)


@dataclass(frozen=True)
class Dots:
    """Round bumps (or dimples) of ``radius`` on a square or staggered lattice of ``spacing``."""

    spacing: float
    radius: float
    staggered: bool

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        row = np.round(y / self.spacing)
        shift = 0.5 * self.spacing * (row % 2) if self.staggered else 0.0
        dx = (x - shift) - np.round((x - shift) / self.spacing) * self.spacing
        dy = y - row * self.spacing
        r = np.sqrt(dx * dx + dy * dy) / self.radius
        return np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))


@dataclass(frozen=True)
class Rings:
    """Concentric circles around ``center`` (2,), ``spacing`` apart, out to ``count`` rings."""

    center: tuple[float, float]
    spacing: float
    width: float
    count: int

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = np.hypot(x - self.center[0], y - self.center[1])
        ring = np.clip(np.round(r / self.spacing), 1, self.count)
        return _plateau(np.abs(r - ring * self.spacing), self.width)


@dataclass(frozen=True)
class Glyphs:
    """Rows of glyph-like marks: each cell of a grid holds a few strokes between lattice points.

    ``strokes`` is ``[rows, cols, K, 2, 2]``: per cell K segments (start, end) in cell-relative
    coordinates; unused strokes are degenerate segments far outside the cell.
    """

    origin: tuple[float, float]  # lower-left corner of the glyph block
    cell: float
    strokes: np.ndarray
    width: float

    def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        rows, cols = self.strokes.shape[:2]
        u = (x - self.origin[0]) / self.cell
        v = (y - self.origin[1]) / self.cell
        col = np.clip(np.floor(u), 0, cols - 1).astype(int)
        row = np.clip(np.floor(v), 0, rows - 1).astype(int)
        local = np.stack([u - col, v - row], axis=-1)  # [N, 2] in cell units
        segments = self.strokes[row, col]  # [N, K, 2, 2]
        distance = _segment_distance(local, segments[:, :, 0], segments[:, :, 1]).min(axis=1)
        return _plateau(distance * self.cell, self.width)


@dataclass(frozen=True)
class Relief:
    """A height field ``h(x, y)`` over a panel face of half-extents ``(hx, hy)``."""

    hx: float
    hy: float
    border: float
    layers: tuple  # of (layer, signed amplitude)

    @property
    def amplitude(self) -> float:
        """An upper bound of |h|."""
        return float(sum(abs(a) for _, a in self.layers))

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Heights at face coordinates ``x, y`` (same shape); zero outside the face."""
        inside = np.minimum(self.hx - np.abs(x), self.hy - np.abs(y))
        fade = np.clip(inside / self.border - 1.0, 0.0, 1.0)
        total = np.zeros(np.shape(x))
        active = fade > 0
        xa, ya = x[active], y[active]
        for layer, amplitude in self.layers:
            total[active] += amplitude * layer.mask(xa, ya)
        return total * fade * fade * (3.0 - 2.0 * fade)


# ------------------------------------------------------------------------------------------
# Random reliefs

_GLYPH_LATTICE = np.array(
    [[0.2, 0.2], [0.5, 0.2], [0.8, 0.2], [0.2, 0.5], [0.5, 0.5], [0.8, 0.5], [0.2, 0.8], [0.5, 0.8], [0.8, 0.8]]
)


def _random_glyphs(rng: np.random.Generator, hx: float, hy: float, size: float, width: float) -> Glyphs:
    """A block of 1-2 rows of glyphs of cell ``size``, centred on the face."""
    cols = int(np.clip((2 * hx * 0.8) // size, 1, 8))
    rows = int(np.clip((2 * hy * 0.8) // size, 1, 2))
    strokes_per_cell = 4
    ends = rng.integers(0, len(_GLYPH_LATTICE), size=(rows, cols, strokes_per_cell, 2))
    strokes = _GLYPH_LATTICE[ends]  # [rows, cols, K, 2, 2]
    used = rng.integers(2, strokes_per_cell + 1, size=(rows, cols))
    unused = np.arange(strokes_per_cell)[None, None, :] >= used[..., None]
    strokes[unused] = 10.0  # degenerate, far outside any cell
    origin = (-cols * size / 2.0, -rows * size / 2.0)
    return Glyphs(origin=origin, cell=size, strokes=strokes, width=width)


def random_relief(
    rng: np.random.Generator, hx: float, hy: float, amplitude: float, kinds: tuple[str, ...] | None = None
) -> Relief:
    """A random relief for a face of half-extents ``(hx, hy)`` with peak |h| ≈ ``amplitude``.

    ``kinds`` restricts the layer types (``grooves, frame, dots, rings, glyphs``); one or two
    layers are drawn, each embossed or engraved at random.
    """
    kinds = kinds or ("grooves", "frame", "dots", "rings", "glyphs")
    short = min(hx, hy)
    width = float(np.clip(rng.uniform(0.08, 0.16) * short, 0.012, 0.04))
    count = 1 if short < 0.06 else int(rng.integers(1, 3))
    chosen = rng.choice(np.asarray(kinds), size=min(count, len(kinds)), replace=False)
    layers = []
    for kind in chosen:
        sign = float(rng.choice([-1.0, 1.0]))
        if kind == "grooves":
            angle = float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]))
            layer = Grooves(spacing=float(rng.uniform(2.5, 5.0) * width), width=width, angle=angle)
        elif kind == "frame":
            inset = float(rng.uniform(0.15, 0.3) * short)
            layer = Frame(hx=hx, hy=hy, inset=inset, width=width * 1.5)
        elif kind == "dots":
            spacing = float(rng.uniform(0.18, 0.35) * short)
            layer = Dots(spacing=spacing, radius=0.35 * spacing, staggered=bool(rng.integers(2)))
        elif kind == "rings":
            spacing = float(rng.uniform(2.5, 4.0) * width)
            layer = Rings(center=(0.0, 0.0), spacing=spacing, width=width, count=int(short * 0.8 // spacing) + 1)
        else:
            size = float(np.clip(rng.uniform(0.3, 0.5) * short, 6 * width, None))
            layer = _random_glyphs(rng, hx, hy, size, width * 0.8)
        layers.append((layer, sign * amplitude / len(chosen) ** 0.5))
    return Relief(hx=hx, hy=hy, border=min(0.12 * short, 0.04), layers=tuple(layers))
