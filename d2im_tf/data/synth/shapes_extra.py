"""More procedural families (``make-data --shape-families extended``): shapes ShapeNet has and the
classic families of :mod:`d2im_tf.data.synth.shapes` never make.

Upholstered armchairs and sofas (rounded cushions, thick arms), cantilever chairs of bent tube, moulded
shells on thin or star bases, swivel chairs with a five-spoke star base on casters, chairs with turned
splayed legs, round / oval / trestle tables, long slender tables (desks and dining tables on four thin
legs at the very corners), cabinets with gapped doors, drawers and bar handles.

Each family is a function of plain parameters (lengths in the classic families' nominal unit, about a
metre) returning parts that :func:`~d2im_tf.data.synth.shapes.mesh_parts` meshes watertight; its
``random_*`` companion draws those parameters. Besides the slabs of ``shapes`` the families use three
primitives with the same interface (``sdf``, ``bounds``, ``subtract``, ``half``): :class:`Capsule`
(tubes, spokes, rails), :class:`Lathe` (turned legs with a radius profile along any axis) and
:class:`Shell` (a thin ellipsoidal shell cut by a plane: moulded seats), and :class:`OvalSlab`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from d2im_tf.data.categories import CABINET, CHAIR, SOFA, TABLE
from d2im_tf.data.synth import shapes
from d2im_tf.data.synth.shapes import FACING_UP, box, cylinder, tilted_back
from d2im_tf.errors import UserError

# ------------------------------------------------------------------------------------------
# Primitives


@dataclass(frozen=True)
class Capsule:
    """A round tube from ``a`` to ``b`` (world points) of ``radius``, with hemispherical ends."""

    a: np.ndarray
    b: np.ndarray
    radius: float
    subtract: bool = False

    @property
    def half(self) -> np.ndarray:
        return np.array([self.radius, self.radius, np.linalg.norm(self.b - self.a) / 2 + self.radius])

    def sdf(self, points: np.ndarray) -> np.ndarray:
        axis = self.b - self.a
        t = np.clip((points - self.a) @ axis / max(float(axis @ axis), 1e-18), 0.0, 1.0)
        return np.linalg.norm(points - self.a - t[:, None] * axis, axis=1) - self.radius

    def bounds(self) -> np.ndarray:
        ends = np.stack([self.a, self.b])
        return np.stack([ends.min(axis=0) - self.radius, ends.max(axis=0) + self.radius])


def capsule(a, b, radius) -> Capsule:
    return Capsule(np.asarray(a, float), np.asarray(b, float), float(radius))


@dataclass(frozen=True)
class Lathe:
    """A solid of revolution about the segment ``a`` → ``b``: radius ``radii[k]`` at the evenly spaced
    stations ``k / (K - 1)`` along it, linear in between, flat ends (a turned leg).

    The SDF is the radial distance to the profile divided by ``sqrt(1 + slope²)`` (exact on straight
    stretches, a close under-estimate elsewhere), intersected with the two end planes."""

    a: np.ndarray
    b: np.ndarray
    radii: tuple[float, ...]
    subtract: bool = False

    @property
    def half(self) -> np.ndarray:
        top = max(self.radii)
        return np.array([top, top, np.linalg.norm(self.b - self.a) / 2])

    def sdf(self, points: np.ndarray) -> np.ndarray:
        length = float(np.linalg.norm(self.b - self.a))
        axis = (self.b - self.a) / length
        along = (points - self.a) @ axis  # [N]
        radial = np.linalg.norm(points - self.a - along[:, None] * axis, axis=1)
        stations = np.linspace(0.0, length, len(self.radii))
        radius = np.interp(along, stations, self.radii)
        slopes = np.diff(self.radii) / np.diff(stations)
        slope = slopes[np.clip(np.searchsorted(stations, along) - 1, 0, len(slopes) - 1)]
        side = (radial - radius) / np.sqrt(1.0 + slope**2)
        ends = np.abs(along - length / 2) - length / 2
        outside = np.hypot(np.maximum(side, 0), np.maximum(ends, 0))
        return outside + np.minimum(np.maximum(side, ends), 0)

    def bounds(self) -> np.ndarray:
        ends = np.stack([self.a, self.b])
        top = max(self.radii)
        return np.stack([ends.min(axis=0) - top, ends.max(axis=0) + top])


def lathe(a, b, radii) -> Lathe:
    return Lathe(np.asarray(a, float), np.asarray(b, float), tuple(float(r) for r in radii))


@dataclass(frozen=True)
class OvalSlab:
    """A horizontal elliptical slab: half axes ``rx`` (x), ``rz`` (z), half thickness ``ry``, edges
    rounded by ``rounding``. The ellipse's SDF is approximated by ``(|(x/rx, z/rz)| − 1) · min(rx, rz)``
    (right sign, slope ≤ 1; exact for a circle)."""

    center: np.ndarray
    rx: float
    rz: float
    ry: float
    rounding: float = 0.0
    subtract: bool = False

    @property
    def half(self) -> np.ndarray:
        return np.array([self.rx, self.ry, self.rz])

    def sdf(self, points: np.ndarray) -> np.ndarray:
        local = points - self.center
        r = self.rounding
        ax, az = self.rx - r, self.rz - r
        outline = (np.hypot(local[:, 0] / ax, local[:, 2] / az) - 1.0) * min(ax, az)
        qy = np.abs(local[:, 1]) - (self.ry - r)
        outside = np.hypot(np.maximum(outline, 0), np.maximum(qy, 0))
        return outside + np.minimum(np.maximum(outline, qy), 0) - r

    def bounds(self) -> np.ndarray:
        half = np.array([self.rx, self.ry, self.rz])
        return np.stack([self.center - half, self.center + half])


@dataclass(frozen=True)
class Shell:
    """A shell of ``thickness`` around the ellipsoid (``center``, half axes ``radii``), keeping what lies
    below the plane through ``plane_point`` with upward normal ``plane_normal`` (a bowl whose rim
    follows the plane: a moulded seat with its back)."""

    center: np.ndarray
    radii: np.ndarray
    thickness: float
    plane_point: np.ndarray
    plane_normal: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    subtract: bool = False

    @property
    def half(self) -> np.ndarray:
        return np.asarray(self.radii, float)

    def sdf(self, points: np.ndarray) -> np.ndarray:
        scaled = np.linalg.norm((points - self.center) / self.radii, axis=1)
        ellipsoid = (scaled - 1.0) * np.min(self.radii)
        shell = np.abs(ellipsoid) - self.thickness / 2
        normal = self.plane_normal / np.linalg.norm(self.plane_normal)
        return np.maximum(shell, (points - self.plane_point) @ normal)

    def bounds(self) -> np.ndarray:
        grow = self.thickness
        return np.stack([self.center - self.radii - grow, self.center + self.radii + grow])


# ------------------------------------------------------------------------------------------
# Chairs and sofas


def upholstered(
    width: float,
    depth: float,
    seat_y: float,
    back_h: float,
    arm_w: float,
    arm_h: float,
    seats: int = 1,
    leg_h: float = 0.06,
    softness: float = 0.4,
    back_tilt: float = 0.15,
) -> list:
    """An armchair (``seats`` = 1) or sofa: a rounded base on four short legs (none if ``leg_h`` is 0),
    ``seats`` seat cushions and back cushions, two thick rounded arms up to ``arm_h``; ``softness`` is
    the rounding as a share of each cushion's smallest half extent."""
    base_lo, base_hi = leg_h, seat_y - 0.12
    parts = [
        box(
            [0, (base_lo + base_hi) / 2, 0],
            [width / 2, (base_hi - base_lo) / 2, depth / 2],
            rounding=softness * 0.5 * (base_hi - base_lo),
        )
    ]
    if leg_h > 0:
        parts += shapes.corner_legs(width * 0.95, depth * 0.9, leg_h + 0.02, 0.06, 0.025, True)
    back_t = 0.18 * depth
    inner = width / 2 - arm_w
    cushion_w = 2 * inner / seats
    cushion_half = [cushion_w / 2 - 0.004, (seat_y - base_hi) / 2 + 0.01, (depth - back_t) / 2]
    rotation = tilted_back(back_tilt)
    for i in range(seats):
        x = -inner + cushion_w * (i + 0.5)
        parts.append(box([x, (base_hi + seat_y) / 2, back_t / 2], cushion_half, rounding=softness * min(cushion_half)))
        back_half = [cushion_w / 2 - 0.004, back_h / 2, back_t / 2]
        center = np.array([x, seat_y - 0.02, -depth / 2 + back_t / 2]) + rotation @ [0, back_h / 2, 0]
        parts.append(box(center, back_half, rotation, softness * min(back_half)))
    for sx in (-1, 1):
        half = [arm_w / 2, (arm_h - base_lo) / 2, depth / 2]
        parts.append(box([sx * (width / 2 - arm_w / 2), (base_lo + arm_h) / 2, 0], half, rounding=softness * arm_w / 2))
    return parts


def random_upholstered(rng: np.random.Generator, sofa: bool) -> list:
    seats = int(rng.integers(2, 4)) if sofa else 1
    width = rng.uniform(0.55, 0.75) * seats + rng.uniform(0.25, 0.45)
    return upholstered(
        width,
        rng.uniform(0.75, 0.95),
        rng.uniform(0.38, 0.46),
        rng.uniform(0.35, 0.55),
        rng.uniform(0.12, 0.24),
        rng.uniform(0.55, 0.72),
        seats,
        leg_h=rng.choice([0.0, rng.uniform(0.04, 0.12)]),
        softness=rng.uniform(0.25, 0.6),
        back_tilt=rng.uniform(0.05, 0.3),
    )


def cantilever(
    width: float,
    depth: float,
    seat_y: float,
    back_h: float,
    tube: float,
    seat_t: float = 0.03,
    back_tilt: float = 0.12,
    panel_back: bool = True,
) -> list:
    """A cantilever chair: on each side one bent tube runs along the floor from back to front, up to the
    seat, back under the seat and up the back; a floor rail joins the sides at the back; a seat slab
    and a back panel (or two back rails) span the tubes."""
    parts = []
    top_back = np.array([0.0, seat_y + back_h * np.cos(back_tilt), -depth / 2 - back_h * np.sin(back_tilt)])
    for sx in (-1, 1):
        x = sx * (width / 2 - tube)
        path = [
            [x, tube, -depth / 2],
            [x, tube, depth / 2],
            [x, seat_y - seat_t, depth / 2 - 0.04],
            [x, seat_y - seat_t, -depth / 2],
            [x, top_back[1], top_back[2]],
        ]
        parts += [capsule(p, q, tube) for p, q in zip(path[:-1], path[1:])]
    parts.append(capsule([-width / 2 + tube, tube, -depth / 2], [width / 2 - tube, tube, -depth / 2], tube))
    parts.append(
        box([0, seat_y - seat_t / 2, 0], [width / 2 - tube, seat_t / 2, depth / 2 - 0.03], rounding=0.3 * seat_t)
    )
    rotation = tilted_back(back_tilt)
    anchor = np.array([0.0, seat_y - seat_t, -depth / 2])
    if panel_back:
        center = anchor + rotation @ [0, back_h * 0.65, 0]
        parts.append(box(center, [width / 2 - tube, back_h * 0.3, seat_t / 2], rotation, 0.3 * seat_t))
    else:
        for share in (0.55, 0.95):
            y = anchor + rotation @ [0, back_h * share, 0]
            parts.append(capsule(y - [width / 2 - tube, 0, 0], y + [width / 2 - tube, 0, 0], tube))
    return parts


def random_cantilever(rng: np.random.Generator) -> list:
    return cantilever(
        rng.uniform(0.42, 0.55),
        rng.uniform(0.42, 0.55),
        rng.uniform(0.42, 0.48),
        rng.uniform(0.35, 0.5),
        rng.uniform(0.01, 0.018),
        rng.uniform(0.02, 0.05),
        rng.uniform(0.05, 0.25),
        rng.uniform() < 0.6,
    )


def star_base(
    radius: float,
    column_top: float,
    spokes: int = 5,
    caster: float = 0.025,
    spoke_r: float = 0.018,
    column_r: float = 0.03,
    angle: float = 0.0,
) -> list:
    """A swivel base: ``spokes`` spokes radiating from a hub above the floor, a caster (a small capsule)
    under each tip, a column from the hub up to ``column_top``."""
    hub_y = 2 * caster + spoke_r
    parts = [cylinder([0, hub_y - spoke_r, 0], column_top, column_r)]
    for k in range(spokes):
        phi = angle + 2 * np.pi * k / spokes
        tip = np.array([radius * np.cos(phi), hub_y, radius * np.sin(phi)])
        parts.append(capsule([0, hub_y + spoke_r, 0], tip, spoke_r))
        parts.append(capsule(tip - [0, hub_y - caster, 0], tip - [0, hub_y - caster - 0.3 * caster, 0], caster))
        parts.append(capsule(tip, tip - [0, hub_y - caster, 0], 0.6 * spoke_r))  # the caster's stem
    return parts


def swivel(
    width: float,
    depth: float,
    seat_y: float,
    back_h: float,
    base_r: float,
    spokes: int = 5,
    arms: bool = False,
    softness: float = 0.4,
) -> list:
    """An office chair: a star base on casters, a padded seat, a padded back on a post, optional arms."""
    seat_t = 0.07
    parts = star_base(base_r, seat_y - seat_t / 2, spokes)
    half = [width / 2, seat_t / 2, depth / 2]
    parts.append(box([0, seat_y - seat_t / 2, 0], half, rounding=softness * seat_t / 2))
    post_z = -depth / 2 + 0.02
    parts.append(box([0, seat_y + 0.05, post_z - 0.02], [0.03, 0.1, 0.012], rounding=0.005))
    parts.append(box([0, seat_y - seat_t / 2, post_z + 0.05], [0.03, 0.012, 0.08], rounding=0.005))
    back_half = [width / 2 * 0.9, back_h / 2, 0.035]
    rotation = tilted_back(0.12)
    center = np.array([0.0, seat_y + 0.1, post_z - 0.04]) + rotation @ [0, back_h / 2, 0]
    parts.append(box(center, back_half, rotation, softness * 0.035))
    if arms:
        for sx in (-1, 1):
            x = sx * (width / 2 + 0.01)
            parts.append(box([x, seat_y + 0.1, 0.0], [0.02, 0.1, 0.02]))
            parts.append(box([x, seat_y + 0.2, 0.02], [0.03, 0.015, depth * 0.3], rounding=0.01))
    return parts


def random_swivel(rng: np.random.Generator) -> list:
    return swivel(
        rng.uniform(0.42, 0.55),
        rng.uniform(0.4, 0.52),
        rng.uniform(0.42, 0.52),
        rng.uniform(0.35, 0.6),
        rng.uniform(0.26, 0.34),
        int(rng.choice([4, 5, 5, 5])),
        rng.uniform() < 0.5,
        rng.uniform(0.3, 0.8),
    )


def splayed_legs(
    width: float,
    depth: float,
    top_y: float,
    inset: float,
    splay: float,
    radius: float,
    count: int = 4,
    turned: bool = True,
    angle: float = np.pi / 4,
) -> list:
    """``count`` legs from under a top at ``top_y`` to the floor, their feet ``splay`` further out;
    turned (a lathe with beads and a taper) or straight tapered. Four legs sit at the corners of a
    ``width × depth`` rectangle inset by ``inset``; other counts on an ellipse."""
    if count == 4:
        heads = [
            np.array([sx * (width / 2 - inset), top_y, sz * (depth / 2 - inset)]) for sx in (-1, 1) for sz in (-1, 1)
        ]
    else:
        heads = [
            np.array(
                [
                    (width / 2 - inset) * np.cos(angle + 2 * np.pi * k / count),
                    top_y,
                    (depth / 2 - inset) * np.sin(angle + 2 * np.pi * k / count),
                ]
            )
            for k in range(count)
        ]
    profile = (
        [radius, 1.25 * radius, 0.8 * radius, 1.1 * radius, 0.9 * radius, 0.65 * radius]
        if turned
        else [radius, 0.9 * radius, 0.8 * radius, 0.7 * radius]
    )
    parts = []
    for head in heads:
        outward = head * [1, 0, 1]
        outward = outward / max(np.linalg.norm(outward), 1e-9)
        foot = head * [1, 0, 1] + splay * outward
        parts.append(lathe(head, foot, profile))
    return parts


def turned_chair(
    width: float,
    depth: float,
    seat_y: float,
    back_h: float,
    leg_r: float,
    splay: float,
    spindles: int = 5,
    seat_t: float = 0.035,
) -> list:
    """A chair on turned splayed legs with a spindle back under a curved top rail."""
    parts = [box([0, seat_y - seat_t / 2, 0], [width / 2, seat_t / 2, depth / 2], rounding=0.4 * seat_t)]
    parts += splayed_legs(width, depth, seat_y - seat_t / 2, 2.5 * leg_r, splay, leg_r)
    rotation = tilted_back(0.15)
    anchor = np.array([0.0, seat_y, -depth / 2 + 0.03])
    rail_y = back_h - 0.04
    for x in np.linspace(-width / 2 + 0.04, width / 2 - 0.04, spindles):
        parts.append(capsule(anchor + rotation @ [x, 0, 0], anchor + rotation @ [x, rail_y, 0], 0.4 * leg_r))
    parts.append(box(anchor + rotation @ [0, rail_y, 0], [width / 2, 0.035, 0.02], rotation, 0.015))
    return parts


def random_turned_chair(rng: np.random.Generator) -> list:
    return turned_chair(
        rng.uniform(0.42, 0.55),
        rng.uniform(0.4, 0.5),
        rng.uniform(0.42, 0.48),
        rng.uniform(0.4, 0.6),
        rng.uniform(0.016, 0.026),
        rng.uniform(0.0, 0.06),
        int(rng.integers(3, 8)),
    )


def shell_chair(
    width: float,
    depth: float,
    seat_y: float,
    back_h: float,
    thickness: float = 0.012,
    base: str = "legs",
    splay: float = 0.05,
) -> list:
    """A moulded shell (an ellipsoidal bowl whose rim rises from the front lip to the top of the back)
    on four thin splayed legs (``base="legs"``) or a star base (``"star"``)."""
    bowl_depth = 0.1
    radii = np.array([width / 2, 0.65 * back_h, 0.55 * depth])
    center = np.array([0.0, seat_y - bowl_depth + radii[1], -0.1 * depth])
    lip = np.array([0.0, seat_y + 0.02, depth / 2])
    top = np.array([0.0, seat_y + back_h - bowl_depth, -depth / 2])
    slope = top - lip
    normal = np.array([0.0, -slope[2], slope[1]])  # perpendicular to the rim line in the y–z plane
    normal = normal if normal[1] > 0 else -normal
    parts = [Shell(center, radii, thickness, lip, normal)]
    under = seat_y - bowl_depth + 0.01  # the bowl's lowest point, legs reach into it
    if base == "star":
        parts += star_base(0.3, under + 0.02, 5)
    else:
        parts += splayed_legs(width * 0.4, depth * 0.4, under, 0.0, splay, 0.016, turned=False)
        parts.append(box([0, under, 0], [width * 0.25, 0.012, depth * 0.25], rounding=0.005))  # the mount
    return parts


def random_shell_chair(rng: np.random.Generator) -> list:
    return shell_chair(
        rng.uniform(0.45, 0.6),
        rng.uniform(0.45, 0.55),
        rng.uniform(0.42, 0.48),
        rng.uniform(0.4, 0.55),
        rng.uniform(0.01, 0.02),
        "star" if rng.uniform() < 0.3 else "legs",
        rng.uniform(0.02, 0.08),
    )


# ------------------------------------------------------------------------------------------
# Tables


def round_table(
    radius: float,
    height: float,
    top_t: float = 0.035,
    base: str = "legs",
    legs: int = 4,
    splay: float = 0.05,
    oval: float = 1.0,
) -> list:
    """A round (``oval`` = 1) or oval (half axes ``radius`` and ``oval · radius``) top on ``legs``
    splayed turned legs (``base="legs"``) or a pedestal with a foot disk (``"pedestal"``)."""
    below = height - top_t
    parts = [OvalSlab(np.array([0.0, height - top_t / 2, 0.0]), radius, oval * radius, top_t / 2, 0.4 * top_t)]
    if base == "pedestal":
        parts.append(lathe([0, 0.02, 0], [0, below + 0.01, 0], [0.08, 0.05, 0.04, 0.06, 0.05]))
        parts.append(OvalSlab(np.array([0.0, 0.02, 0.0]), 0.45 * radius, 0.45 * radius * oval, 0.02, 0.01))
    else:
        parts += splayed_legs(
            2 * radius,
            2 * oval * radius,
            below + 0.005,
            0.3 * radius,
            splay,
            0.025,
            legs,
            turned=True,
            angle=np.pi / 4 if legs == 4 else np.pi / 2,
        )
    return parts


def random_round_table(rng: np.random.Generator, oval: bool) -> list:
    radius = rng.uniform(0.4, 0.7)
    base = "pedestal" if rng.uniform() < 0.35 else "legs"
    return round_table(
        radius,
        rng.uniform(0.55, 0.76),
        rng.uniform(0.025, 0.05),
        base,
        int(rng.choice([3, 4])) if not oval else 4,
        rng.uniform(0.0, 0.08),
        rng.uniform(0.5, 0.75) if oval else 1.0,
    )


def trestle_table(
    width: float, depth: float, height: float, top_t: float = 0.04, post: float = 0.04, stretcher: bool = True
) -> list:
    """A long top on two trestles (a post standing on a foot beam under a cross bar at each end) and a
    stretcher between the posts."""
    below = height - top_t
    parts = [box([0, height - top_t / 2, 0], [width / 2, depth / 2, top_t / 2], FACING_UP, 0.3 * top_t)]
    for sx in (-1, 1):
        x = sx * (width / 2 - 0.15 * width)
        parts.append(box([x, below / 2, 0], [post, below / 2, post], rounding=0.2 * post))
        parts.append(box([x, 0.03, 0], [post * 1.1, 0.03, depth * 0.42], rounding=0.01))
        parts.append(box([x, below - 0.02, 0], [post, 0.025, depth * 0.4], rounding=0.01))
    if stretcher:
        parts.append(box([0, below * 0.35, 0], [width / 2 - 0.15 * width, 0.03, 0.6 * post], rounding=0.01))
    return parts


def random_trestle_table(rng: np.random.Generator) -> list:
    width = rng.uniform(1.0, 1.8)
    return trestle_table(
        width,
        width * rng.uniform(0.35, 0.55),
        rng.uniform(0.6, 0.78),
        rng.uniform(0.03, 0.06),
        rng.uniform(0.03, 0.06),
        rng.uniform() < 0.7,
    )


def slender_table(
    width: float,
    depth: float,
    height: float,
    top_t: float = 0.03,
    leg: float = 0.018,
    inset: float = 0.0,
    apron: float = 0.0,
    round_legs: bool = False,
) -> list:
    """A long top on four slender legs (half-thickness ``leg``) standing ``inset`` in from its corners,
    with a plain apron ``apron`` high under the top's edges, or none (``apron`` = 0): the desks and
    dining tables of ShapeNet, whose legs are far apart and thinner than the classic tables'."""
    below = height - top_t
    parts = [box([0, height - top_t / 2, 0], [width / 2, depth / 2, top_t / 2], FACING_UP, 0.2 * top_t)]
    corner = inset + leg  # the legs' axes, this far in from the top's edges
    parts += shapes.corner_legs(width, depth, below + 0.005, corner, leg, round_legs)
    if apron > 0:
        y = below - apron / 2 + 0.005  # overlapping the top a little
        for sz in (-1, 1):
            parts.append(box([0, y, sz * (depth / 2 - corner)], [width / 2 - corner, apron / 2, 0.6 * leg]))
        for sx in (-1, 1):
            parts.append(box([sx * (width / 2 - corner), y, 0], [0.6 * leg, apron / 2, depth / 2 - corner]))
    return parts


def random_slender_table(rng: np.random.Generator) -> list:
    width = rng.uniform(1.2, 2.0)
    return slender_table(
        width,
        width * rng.uniform(0.35, 0.6),
        rng.uniform(0.68, 0.78),
        rng.uniform(0.02, 0.05),
        rng.uniform(0.012, 0.025),
        rng.uniform(0.0, 0.04),
        rng.uniform(0.04, 0.1) if rng.uniform() < 0.4 else 0.0,
        rng.uniform() < 0.3,
    )


# ------------------------------------------------------------------------------------------
# Cabinets


def door_cabinet(
    width: float,
    height: float,
    depth: float,
    columns: int = 2,
    drawers: int = 1,
    handle: str = "bar",
    legs: bool = True,
    gap: float = 0.008,
) -> list:
    """A body with ``drawers`` rows of drawers over a row of ``columns`` doors; every front is separated
    by a carved gap and has a bar handle on two posts (``handle="bar"``) or a knob (``"knob"``); on four
    legs or a plinth."""
    base = 0.1 if legs else 0.05
    parts = [box([0, base + (height - base) / 2, 0], [width / 2, (height - base) / 2, depth / 2], rounding=0.006)]
    if legs:
        parts += shapes.corner_legs(width, depth, base + 0.01, 0.04, 0.02, False)
    else:
        parts.append(box([0, base / 2 + 0.005, 0], [width / 2 - 0.02, base / 2 + 0.005, depth / 2 - 0.02]))
    front, margin = depth / 2, 0.025
    bottom, top = base + margin, height - margin
    drawer_h = 0.16 * (top - bottom)
    rows = [("drawer", drawer_h, 1)] * drawers + [("door", top - bottom - drawers * drawer_h, columns)]
    y = top
    for kind, h, count in rows:
        cell = (width - 2 * margin) / count
        for c in range(count):
            x = -width / 2 + margin + cell * (c + 0.5)
            # the gap around each front: a groove carved into the body
            parts.append(box([x, y - h / 2, front], [cell / 2, h / 2, 0.01], subtract=True))
            parts.append(box([x, y - h / 2, front - 0.005], [cell / 2 - gap, h / 2 - gap, 0.01], rounding=0.003))
            if kind == "door":
                hx = x + (cell / 2 - 0.05) * (1 if c % 2 == 0 else -1) * (1 if count > 1 else 0)
                hy, vertical = y - h * 0.4, True
            else:
                hx, hy, vertical = x, y - h / 2, False
            parts += _handle([hx, hy, front + 0.005], handle, vertical, min(0.06, 0.25 * (h if vertical else cell)))
        y -= h
    return parts


def _handle(at, style: str, vertical: bool, half_length: float) -> list:
    """A bar on two posts standing off the front at ``at`` (the front face's point), or a knob."""
    at = np.asarray(at, float)
    if style == "knob":
        return [capsule(at - [0, 0, 0.01], at + [0, 0, 0.02], 0.012)]
    along = np.array([0.0, half_length, 0.0]) if vertical else np.array([half_length, 0.0, 0.0])
    out = np.array([0.0, 0.0, 0.03])
    back = np.array([0.0, 0.0, 0.01])
    posts = [capsule(at + side * along - back, at + side * along + out, 0.009) for side in (-0.8, 0.8)]
    return [capsule(at - along + out, at + along + out, 0.01), *posts]


def random_door_cabinet(rng: np.random.Generator) -> list:
    width = rng.uniform(0.5, 1.2)
    return door_cabinet(
        width,
        rng.uniform(0.6, 1.3),
        rng.uniform(0.35, 0.55),
        int(rng.integers(1, 4)) if width > 0.7 else int(rng.integers(1, 3)),
        int(rng.integers(0, 4)),
        "bar" if rng.uniform() < 0.7 else "knob",
        rng.uniform() < 0.5,
    )


# ------------------------------------------------------------------------------------------
# Choosing a family

EXTRA_FAMILIES: dict[str, dict[str, Callable[[np.random.Generator], list]]] = {
    CHAIR: {
        "armchair": lambda rng: random_upholstered(rng, sofa=False),
        "cantilever": random_cantilever,
        "shell": random_shell_chair,
        "swivel": random_swivel,
        "turned": random_turned_chair,
    },
    TABLE: {
        "round": lambda rng: random_round_table(rng, oval=False),
        "oval": lambda rng: random_round_table(rng, oval=True),
        "trestle": random_trestle_table,
        "slender": random_slender_table,
    },
    CABINET: {"doors": random_door_cabinet},
    SOFA: {"upholstered": lambda rng: random_upholstered(rng, sofa=True)},
}
# The families ``--shape-families extended`` draws from, per category. Frozen: a dataset made with it
# is rebuilt shape for shape (the bundled model's recipe depends on it); a family added later joins
# :data:`EXTRA_FAMILIES` and is asked for by name (``--shape-families slender``).
EXTENDED_MIX = {
    CHAIR: ("armchair", "cantilever", "shell", "swivel", "turned"),
    TABLE: ("oval", "round", "trestle"),
    CABINET: ("doors",),
    SOFA: ("upholstered",),
}
CLASSIC_SHARE = 0.4  # share of shapes still drawn from the classic families


def random_parts(category: str, rng: np.random.Generator) -> list:
    """Parts of a random shape of ``category``: a classic family (:data:`CLASSIC_SHARE`) or, evenly, one
    of :data:`EXTENDED_MIX`."""
    if rng.uniform() < CLASSIC_SHARE or category not in EXTENDED_MIX:
        return shapes.family_parts(category, rng)
    names = EXTENDED_MIX[category]
    return EXTRA_FAMILIES[category][names[int(rng.integers(len(names)))]](rng)


def family_names() -> list[str]:
    """Every family of :data:`EXTRA_FAMILIES` by name (the names are unique across categories)."""
    return sorted(name for families in EXTRA_FAMILIES.values() for name in families)


def require_family(name: str, category: str) -> None:
    """:class:`UserError` (one line) unless ``name`` is one of ``category``'s families."""
    families = EXTRA_FAMILIES.get(category, {})
    if name not in families:
        known = ", ".join(sorted(families)) or "none"
        raise UserError(f"--shape-families {name}: no {category} shapes of that family; {category}: {known}")


def named_family_parts(name: str, category: str, rng: np.random.Generator) -> list:
    """Parts of a random shape of the family ``name``, which must be one of ``category``'s."""
    require_family(name, category)
    return EXTRA_FAMILIES[category][name](rng)
