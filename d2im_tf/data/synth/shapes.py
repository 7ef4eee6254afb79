"""Procedural furniture families, meshed watertight from an SDF composition.

Every shape is a list of :class:`Part` s — extruded rectangles and disks ("slabs") with rounded
edges, optional relief on their front face (:mod:`d2im_tf.data.synth.relief`), each unioned with or
subtracted from what came before. The composed signed distance is evaluated on a regular grid (each
part only inside its own bounding box plus a margin) and meshed with marching cubes, which gives a
closed, consistently wound surface. The mesh is centred on its bounding box and scaled to the
bounding diagonal :data:`WORLD_DIAGONAL` in the world frame (ShapeNet-like: y up, front +z).

Families (ShapeNet ids): chair 03001627, table 04379243, cabinet 02933112, sofa 04256520.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import trimesh
from skimage.measure import marching_cubes

from d2im_tf.data.categories import CABINET, CATEGORY_NAMES, CHAIR, SOFA, TABLE
from d2im_tf.data.synth.relief import Relief, random_relief

# Bounding diagonal of every generated object in the world frame: keeps all of it in the image at the
# closest DISN camera (distance ratio 0.6, i.e. 1.05 from the origin).
WORLD_DIAGONAL = 0.8
DEFAULT_RESOLUTION = 192  # grid cells along the bounding diagonal
# Relative amplitude of relief, as a fraction of the object's bounding diagonal.
RELIEF_RANGE = (0.005, 0.03)


# ------------------------------------------------------------------------------------------
# Parts


def _axes(ex, ey) -> np.ndarray:
    """A rotation whose columns are the local x, y, z axes in world coordinates (z = x × y)."""
    ex = np.asarray(ex, dtype=np.float64)
    ey = np.asarray(ey, dtype=np.float64)
    ex, ey = ex / np.linalg.norm(ex), ey / np.linalg.norm(ey)
    return np.stack([ex, ey, np.cross(ex, ey)], axis=1)


IDENTITY = np.eye(3)
FACING_UP = _axes([1, 0, 0], [0, 0, -1])  # local z → world +y (a table top's upper face)
FACING_RIGHT = _axes([0, 0, -1], [0, 1, 0])  # local z → world +x
FACING_LEFT = _axes([0, 0, 1], [0, 1, 0])  # local z → world -x
FACING_BACK = _axes([-1, 0, 0], [0, 1, 0])  # local z → world -z
VERTICAL_AXIS = FACING_UP  # a disk slab with this rotation is an upright cylinder


def tilted_back(angle: float) -> np.ndarray:
    """Local y leaning backwards (towards -z) by ``angle`` radians, local z facing forwards."""
    return _axes([1, 0, 0], [0, np.cos(angle), -np.sin(angle)])


@dataclass(frozen=True)
class Part:
    """A slab: a rectangle (``half[:2]``) or a disk (radius ``half[0]``) extruded ``±half[2]``
    along local z, edges rounded by ``rounding``, front face (+z) displaced by ``relief``.

    ``rotation`` has the local axes as columns, so ``local = (p - center) @ rotation``.
    """

    center: np.ndarray
    half: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: IDENTITY)
    disk: bool = False
    rounding: float = 0.0
    relief: Relief | None = None
    subtract: bool = False

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Approximate signed distance ``[N]`` of world points ``[N, 3]`` (exact without relief)."""
        local = (points - self.center) @ self.rotation
        x, y, z = local[:, 0], local[:, 1], local[:, 2]
        lift = self._relief_height(x, y, z)
        r = self.rounding
        if self.disk:
            outline = np.hypot(x, y) - (self.half[0] - r)
        else:
            qx, qy = np.abs(x) - (self.half[0] - r), np.abs(y) - (self.half[1] - r)
            outline = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
        # The front face sits at half_z + lift; the back face at -half_z.
        qz = np.abs(z - lift / 2) - (self.half[2] + lift / 2 - r)
        outside = np.hypot(np.maximum(outline, 0), np.maximum(qz, 0))
        return outside + np.minimum(np.maximum(outline, qz), 0) - r

    def _relief_height(self, x, y, z) -> np.ndarray | float:
        """Relief heights, computed only in the slab of points near the front face."""
        if self.relief is None:
            return 0.0
        height = np.zeros_like(x)
        near = np.abs(z - self.half[2]) < 2 * self.relief.amplitude + 0.05 * self.half[2] + 0.02
        height[near] = self.relief.height(x[near], y[near])
        return height

    def bounds(self) -> np.ndarray:
        """World axis-aligned bounding box ``[2, 3]`` (lower, upper) of the part."""
        lift = self.relief.amplitude if self.relief is not None else 0.0
        half = np.array([self.half[0], self.half[0] if self.disk else self.half[1], self.half[2] + lift])
        corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T * half
        world = corners @ self.rotation.T + self.center
        return np.stack([world.min(axis=0), world.max(axis=0)])


def box(center, half, rotation=IDENTITY, rounding=0.0, relief=None, subtract=False) -> Part:
    return Part(np.asarray(center, float), np.asarray(half, float), rotation, False, rounding, relief, subtract)


def cylinder(bottom, top_y, radius, rounding=0.0) -> Part:
    """An upright cylinder from ``bottom`` (x, y, z) up to height ``top_y``."""
    bottom = np.asarray(bottom, float)
    half_height = (top_y - bottom[1]) / 2
    center = bottom + [0.0, half_height, 0.0]
    return Part(center, np.array([radius, radius, half_height]), VERTICAL_AXIS, True, rounding)


def disk(center, radius, half_thickness, rotation=VERTICAL_AXIS, rounding=0.0, relief=None) -> Part:
    return Part(np.asarray(center, float), np.array([radius, radius, half_thickness]), rotation, True, rounding, relief)


# ------------------------------------------------------------------------------------------
# Composition → mesh


def _grid(parts: list[Part], spacing: float, margin: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Origin (3,) and shape of a grid covering every part's bounds plus ``margin``."""
    bounds = np.stack([p.bounds() for p in parts])
    lower = bounds[:, 0].min(axis=0) - margin
    upper = bounds[:, 1].max(axis=0) + margin
    shape = tuple(int(n) for n in np.ceil((upper - lower) / spacing) + 1)
    return lower, shape


def compose_sdf_grid(
    parts: list[Part], spacing: float, grid_parts: list | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The composed SDF sampled on a grid: ``(values [X, Y, Z], origin (3,))``; the grid covers the
    bounds of ``grid_parts`` (default ``parts``) plus a margin.

    Values are exact within ``margin`` of the surface and have the right sign elsewhere: each part
    is evaluated only inside its bounds plus the margin, beyond which its SDF exceeds the margin.
    """
    margin = 3.0 * spacing
    origin, shape = _grid(grid_parts or parts, spacing, 2 * margin)
    values = np.full(shape, margin)
    for part in parts:
        lo, hi = part.bounds()
        start = np.clip(np.floor((lo - margin - origin) / spacing).astype(int), 0, None)
        stop = np.minimum(np.ceil((hi + margin - origin) / spacing).astype(int) + 1, shape)
        axes = [origin[i] + spacing * np.arange(start[i], stop[i]) for i in range(3)]
        points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        window = tuple(slice(a, b) for a, b in zip(start, stop))
        part_sdf = part.sdf(points.reshape(-1, 3)).reshape(points.shape[:3])
        if part.subtract:
            values[window] = np.maximum(values[window], -part_sdf)
        else:
            values[window] = np.minimum(values[window], part_sdf)
    return values, origin


def without_relief(parts: list) -> list:
    """``parts`` with every relief taken off: the shape's coarse surface."""
    return [replace(p, relief=None) if getattr(p, "relief", None) is not None else p for p in parts]


def grid_spacing(parts: list, resolution: int) -> float:
    """The grid step of :func:`mesh_parts`: the added parts' bounding diagonal over ``resolution``."""
    bounds = np.stack([p.bounds() for p in parts if not p.subtract])
    return float(np.linalg.norm(bounds[:, 1].max(axis=0) - bounds[:, 0].min(axis=0))) / resolution


def march_parts(parts: list, spacing: float, grid_parts: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of the composed SDF (grid as :func:`compose_sdf_grid`): ``vertices [V, 3]`` in
    the parts' units and ``faces [F, 3]``, wound outwards."""
    values, origin = compose_sdf_grid(parts, spacing, grid_parts)
    # Keep every grid value away from 0 so no vertex lands on a grid node (no zero-area faces).
    floor = 0.02 * spacing
    values = np.where(values < 0, np.minimum(values, -floor), np.maximum(values, floor))
    vertices, faces, _, _ = marching_cubes(values, level=0.0, spacing=(spacing,) * 3, gradient_direction="ascent")
    return vertices + origin, faces


def closed_mesh(vertices: np.ndarray, faces: np.ndarray) -> trimesh.Trimesh:
    """The largest component of a marched surface, oriented outwards."""
    mesh = _largest_component(trimesh.Trimesh(vertices, faces, process=False))
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def mesh_parts(parts: list[Part], resolution: int = DEFAULT_RESOLUTION) -> trimesh.Trimesh:
    """Marching cubes of the composed SDF, centred and scaled to :data:`WORLD_DIAGONAL`; its
    ``metadata["family_frame"]`` is ``(centre, scale)``, world = (family − centre) · scale."""
    vertices, faces = march_parts(parts, grid_spacing(parts, resolution))
    lower, upper = vertices.min(axis=0), vertices.max(axis=0)
    centre, scale = (lower + upper) / 2, WORLD_DIAGONAL / np.linalg.norm(upper - lower)
    mesh = closed_mesh(np.round((vertices - centre) * scale, 6), faces)
    mesh.metadata["family_frame"] = (centre, scale)
    return mesh


def coarse_mesh(parts: list, family_frame, resolution: int = DEFAULT_RESOLUTION) -> trimesh.Trimesh:
    """The shape of ``parts`` without its relief, meshed on the grid of :func:`mesh_parts` and placed
    in the same world frame (``family_frame`` from that mesh's metadata): the two surfaces are the same
    away from the relief."""
    centre, scale = family_frame
    vertices, faces = march_parts(without_relief(parts), grid_spacing(parts, resolution), grid_parts=parts)
    return closed_mesh(np.round((vertices - centre) * scale, 6), faces)


def face_parts(parts: list, mesh: trimesh.Trimesh, family_frame) -> np.ndarray:
    """For each face of ``mesh`` (made by :func:`mesh_parts` from ``parts``; ``family_frame`` its
    ``(centre, scale)``), the index into ``parts`` of the added part nearest its centroid ``[F]``."""
    centre, scale = family_frame
    points = mesh.triangles_center / scale + centre  # [F, 3] in the family's units
    best = np.full(len(points), np.inf)
    label = np.zeros(len(points), dtype=int)
    reach = 4.0 / DEFAULT_RESOLUTION  # parts are only evaluated near their bounds
    for index, part in enumerate(parts):
        if part.subtract:
            continue
        lo, hi = part.bounds()
        near = np.flatnonzero(np.all((points > lo - reach) & (points < hi + reach), axis=1))
        distance = np.abs(part.sdf(points[near]))
        closer = distance < best[near]
        best[near[closer]], label[near[closer]] = distance[closer], index
    return label


def thin_parts(parts: list) -> np.ndarray:
    """``[P]`` bool: rod-like parts (legs, rails, tubes, knobs) whose second-smallest extent is below 8 %
    of the structure's bounding diagonal; plates and bulky parts are not thin."""
    bounds = np.stack([p.bounds() for p in parts if not p.subtract])
    diagonal = np.linalg.norm(bounds[:, 1].max(axis=0) - bounds[:, 0].min(axis=0))
    return np.array([np.sort(2 * np.abs(np.asarray(p.half, float)))[1] < 0.08 * diagonal for p in parts])


def _largest_component(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The component with the most faces: drops sealed pockets between touching parts."""
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    largest = np.argmax(np.bincount(labels))
    if np.all(labels == largest):
        return mesh
    kept = mesh.submesh([np.flatnonzero(labels == largest)], append=True)
    return trimesh.Trimesh(kept.vertices, kept.faces, process=False)


# ------------------------------------------------------------------------------------------
# Families. Each builds parts in a nominal unit (seat/table/cabinet/sofa proportions in metres
# divided by about one metre); ``amp`` is the relief amplitude in that unit.


def _relief(rng, hx, hy, amp, kinds=None, thickness=None) -> Relief:
    """A random relief, its amplitude capped to a third of the panel's ``thickness``."""
    if thickness is not None:
        amp = min(amp, thickness / 3)
    return random_relief(rng, hx, hy, amp, kinds)


def _amplitude(rng, dims) -> float:
    return float(rng.uniform(*RELIEF_RANGE) * np.linalg.norm(dims))


def corner_legs(width, depth, height, inset, thickness, round_legs) -> list[Part]:
    """Four legs from the floor to ``height`` at the corners of a ``width × depth`` rectangle."""
    parts = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            x, z = sx * (width / 2 - inset), sz * (depth / 2 - inset)
            if round_legs:
                parts.append(cylinder([x, 0.0, z], height, thickness))
            else:
                parts.append(box([x, height / 2, z], [thickness, height / 2, thickness], rounding=0.2 * thickness))
    return parts


def chair(rng: np.random.Generator) -> list[Part]:
    width, depth = rng.uniform(0.42, 0.6), rng.uniform(0.42, 0.58)
    seat_y, back_h = rng.uniform(0.4, 0.5), rng.uniform(0.35, 0.55)
    seat_t = rng.uniform(0.03, 0.06)
    amp = _amplitude(rng, [width, seat_y + back_h, depth])
    leg_t = rng.uniform(0.014, 0.03)
    seat_round = 0.3 * seat_t * rng.uniform()
    parts = [box([0, seat_y - seat_t / 2, 0], [width / 2, seat_t / 2, depth / 2], rounding=seat_round)]
    parts += corner_legs(width, depth, seat_y - seat_t / 2, leg_t * 1.5, leg_t, rng.uniform() < 0.4)
    if rng.uniform() < 0.5:  # side and front stretchers
        y = rng.uniform(0.1, 0.2)
        for sx in (-1, 1):
            parts.append(box([sx * (width / 2 - 1.5 * leg_t), y, 0], [0.6 * leg_t, 0.6 * leg_t, depth / 2 - leg_t]))
        parts.append(box([0, y, depth / 2 - 1.5 * leg_t], [width / 2 - leg_t, 0.6 * leg_t, 0.6 * leg_t]))
    tilt = rng.uniform(0.0, 0.25)
    rotation = tilted_back(tilt)
    back_t = rng.uniform(0.025, 0.05)
    anchor = np.array([0.0, seat_y - seat_t / 2, -depth / 2 + back_t / 2])

    def at(x, y):  # a point in the back's plane: x across, y up along the back
        return anchor + rotation @ [x, y, 0.0]

    style = rng.choice(["panel", "slats", "ladder", "window"])
    half_w = width / 2 - rng.uniform(0.0, 0.03)
    post = rng.uniform(0.02, 0.035)
    if style in ("panel", "window"):
        relief = _relief(rng, half_w, back_h / 2, amp, thickness=back_t)
        parts.append(box(at(0, back_h / 2), [half_w, back_h / 2, back_t / 2], rotation, 0.2 * back_t, relief))
        if style == "window":  # an open back: a rectangular or round hole through the panel
            hole_w, hole_h = half_w * rng.uniform(0.4, 0.7), back_h * rng.uniform(0.15, 0.3)
            center = at(0, back_h * rng.uniform(0.45, 0.6))
            if rng.uniform() < 0.5:
                parts.append(box(center, [hole_w, hole_h, back_t], rotation, 0.3 * hole_h, subtract=True))
            else:
                radius = hole_h * 1.2
                parts.append(Part(center, np.array([radius, radius, back_t]), rotation, True, subtract=True))
    else:
        rail_h = rng.uniform(0.05, 0.1)
        for sx in (-1, 1):
            side = at(sx * (half_w - post), back_h / 2)
            parts.append(box(side, [post, back_h / 2, back_t / 2], rotation, 0.3 * post))
        top = _relief(rng, half_w - 2 * post, rail_h / 2, amp, ("grooves", "glyphs", "dots"), back_t)
        parts.append(box(at(0, back_h - rail_h / 2), [half_w - post, rail_h / 2, back_t / 2], rotation, 0.0, top))
        inner = half_w - 2 * post
        if style == "slats":
            count = int(rng.integers(2, 7))
            slat = inner / count * rng.uniform(0.3, 0.6)
            for x in np.linspace(-inner, inner, count + 2)[1:-1]:
                parts.append(box(at(x, back_h / 2), [slat / 2, back_h / 2, back_t / 3], rotation))
        else:
            count = int(rng.integers(2, 5))
            for y in np.linspace(0.1 * back_h, back_h - rail_h, count + 1)[:-1]:
                relief = _relief(rng, inner, rail_h / 3, amp, ("grooves", "dots"), back_t)
                half = [inner + post / 2, rail_h / 3, back_t / 2.5]
                parts.append(box(at(0, y + rail_h / 3), half, rotation, 0.0, relief))
    if rng.uniform() < 0.3:  # armrests on posts
        arm_y = seat_y + rng.uniform(0.15, 0.25)
        for sx in (-1, 1):
            x = sx * (width / 2 - post)
            parts.append(box([x, arm_y, 0.0], [post, 0.6 * post, depth / 2 - post], rounding=0.3 * post))
            low = seat_y - seat_t / 2
            parts.append(box([x, (low + arm_y) / 2, depth / 2 - 2 * post], [0.7 * post, (arm_y - low) / 2, 0.7 * post]))
    return parts


def table(rng: np.random.Generator) -> list[Part]:
    width = rng.uniform(0.8, 1.4)
    depth, height = width * rng.uniform(0.5, 0.9), rng.uniform(0.55, 0.78)
    top_t = rng.uniform(0.025, 0.06)
    amp = _amplitude(rng, [width, height, depth])
    round_top = rng.uniform() < 0.3
    top_relief_kinds = ("rings", "dots", "glyphs", "frame") if not round_top else ("rings", "dots", "grooves")
    face = width / 2 * (0.7 if round_top else 1.0), depth / 2 * (0.7 if round_top else 1.0)
    relief = _relief(rng, *face, amp, top_relief_kinds, top_t) if rng.uniform() < 0.75 else None
    below = height - top_t / 2  # supports reach into the top
    if round_top:
        depth = width
        parts = [disk([0, height - top_t / 2, 0], width / 2, top_t / 2, FACING_UP, 0.3 * top_t, relief)]
    else:
        parts = [box([0, height - top_t / 2, 0], [width / 2, depth / 2, top_t / 2], FACING_UP, 0.3 * top_t, relief)]
    style = "pedestal" if round_top and rng.uniform() < 0.7 else rng.choice(["legs", "legs", "trestle"])
    if style == "pedestal":
        column = rng.uniform(0.04, 0.08)
        parts.append(cylinder([0, 0, 0], below, column))
        parts.append(disk([0, 0.02, 0], rng.uniform(0.2, 0.35) * width, 0.02, rounding=0.01))
    elif style == "trestle":
        inset = rng.uniform(0.08, 0.15) * width
        board = rng.uniform(0.02, 0.035)
        for sx in (-1, 1):
            relief = _relief(rng, depth * 0.35, below / 2, amp, ("grooves", "frame", "glyphs"), 2 * board)
            rotation = FACING_RIGHT if sx > 0 else FACING_LEFT
            half = [depth * 0.35, below / 2, board]
            parts.append(box([sx * (width / 2 - inset), below / 2, 0], half, rotation, 0.005, relief))
        parts.append(box([0, below * 0.3, 0], [width / 2 - inset, 0.03, 0.02]))
    else:
        leg_t = rng.uniform(0.018, 0.04)
        inset = leg_t * rng.uniform(1.2, 3.0) if not round_top else width * 0.2
        parts += corner_legs(width, depth, below, inset, leg_t, rng.uniform() < 0.5)
        if not round_top:  # aprons under the top, their outer faces carved
            apron_h, apron_t = rng.uniform(0.05, 0.12), 0.012
            apron_y = below - top_t / 2 - apron_h / 2 + 0.005  # overlapping the top a little
            kinds = ("grooves", "glyphs", "dots", "frame")
            for sz in (-1, 1):
                relief = _relief(rng, width / 2 - inset, apron_h / 2, amp, kinds, 2 * apron_t)
                rotation = IDENTITY if sz > 0 else FACING_BACK
                center = [0, apron_y, sz * (depth / 2 - inset)]
                parts.append(box(center, [width / 2 - inset, apron_h / 2, apron_t], rotation, 0.0, relief))
            for sx in (-1, 1):
                relief = _relief(rng, depth / 2 - inset, apron_h / 2, amp, kinds, 2 * apron_t)
                rotation = FACING_RIGHT if sx > 0 else FACING_LEFT
                center = [sx * (width / 2 - inset), apron_y, 0]
                parts.append(box(center, [depth / 2 - inset, apron_h / 2, apron_t], rotation, 0.0, relief))
            if rng.uniform() < 0.3:  # a lower shelf
                parts.append(box([0, below * 0.25, 0], [width / 2 - inset, depth / 2 - inset, 0.012], FACING_UP))
    return parts


def cabinet(rng: np.random.Generator) -> list[Part]:
    width, height, depth = rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.2), rng.uniform(0.35, 0.55)
    amp = _amplitude(rng, [width, height, depth])
    base = rng.uniform(0.03, 0.1)
    parts = [box([0, base + (height - base) / 2, 0], [width / 2, (height - base) / 2, depth / 2], rounding=0.005)]
    if rng.uniform() < 0.5:
        parts.append(box([0, base / 2 + 0.005, 0], [width / 2 - 0.03, base / 2 + 0.005, depth / 2 - 0.03]))  # plinth
    else:
        parts += corner_legs(width, depth, base + 0.01, 0.04, rng.uniform(0.015, 0.03), rng.uniform() < 0.5)
    if rng.uniform() < 0.5:  # a top board overhanging the body
        parts.append(box([0, height + 0.008, 0.01], [width / 2 + 0.02, depth / 2 + 0.02, 0.012], FACING_UP, 0.006))
    front = depth / 2
    bottom, top = base + 0.03, height - 0.03
    if rng.uniform() < 0.35:  # an open niche with a shelf board
        niche_y = rng.uniform(0.3, 0.5) * (top - bottom)
        parts.append(box([0, top - niche_y / 2, front], [width / 2 - 0.03, niche_y / 2, 0.7 * depth], subtract=True))
        parts.append(box([0, top - niche_y / 2, 0], [width / 2 - 0.02, 0.01, depth / 2 - 0.02]))
        top -= niche_y + 0.03
    columns = int(rng.integers(1, 4)) if width > 0.6 else int(rng.integers(1, 3))
    drawers = int(rng.integers(0, 4))
    drawer_h = (top - bottom) * rng.uniform(0.12, 0.2)
    rows = [("drawer", drawer_h)] * drawers + [("door", top - bottom - drawers * drawer_h)]
    gap, thickness = 0.008, rng.uniform(0.012, 0.025)
    cell_w = (width - 0.06) / columns
    y = top
    handle_r = rng.uniform(0.008, 0.015)
    for kind, h in rows:
        if h < 0.08:
            continue
        for c in range(columns):
            x = -width / 2 + 0.03 + cell_w * (c + 0.5)
            hx, hy = cell_w / 2 - gap, h / 2 - gap
            kinds = ("frame", "grooves", "glyphs", "rings") if kind == "door" else ("grooves", "frame", "dots")
            relief = _relief(rng, hx, hy, amp, kinds, 2 * thickness)
            parts.append(box([x, y - h / 2, front + thickness - 0.004], [hx, hy, thickness], IDENTITY, 0.004, relief))
            hy_off = 0.0 if kind == "drawer" else hy * 0.6
            hx_off = hx * 0.75 * (1 if c % 2 == 0 else -1) if kind == "door" else 0.0
            knob_z = front + 2 * thickness + 0.006  # overlaps the door face even where it is engraved
            parts.append(disk([x + hx_off, y - h / 2 + hy_off, knob_z], handle_r, 0.012 + amp, IDENTITY, 0.005))
        y -= h
    return parts


def sofa(rng: np.random.Generator) -> list[Part]:
    width, height, depth = rng.uniform(1.2, 2.0), rng.uniform(0.7, 0.9), rng.uniform(0.75, 0.95)
    amp = _amplitude(rng, [width, height, depth])
    legs_h = rng.uniform(0.03, 0.1)
    seat_y = rng.uniform(0.38, 0.46)
    arm_w, arm_h = rng.uniform(0.1, 0.2), rng.uniform(0.55, 0.7)
    back_t = rng.uniform(0.15, 0.25)
    parts = corner_legs(width, depth, legs_h + 0.02, 0.06, 0.025, rng.uniform() < 0.5)
    base_top = seat_y - 0.12
    parts.append(box([0, (legs_h + base_top) / 2, 0], [width / 2, (base_top - legs_h) / 2, depth / 2], rounding=0.02))
    inner = width / 2 - arm_w
    cushions = int(rng.integers(1, 4))
    cushion_w = 2 * inner / cushions
    for i in range(cushions):
        x = -inner + cushion_w * (i + 0.5)
        half = [cushion_w / 2 - 0.006, (seat_y - base_top) / 2 + 0.01, depth / 2 - back_t / 2]
        parts.append(box([x, (base_top + seat_y) / 2, back_t / 2], half, rounding=0.04))
    for sx in (-1, 1):
        relief = _relief(rng, depth / 2 - 0.05, (arm_h - legs_h) / 2 - 0.05, amp, ("grooves", "frame", "rings"), arm_w)
        rotation = FACING_RIGHT if sx > 0 else FACING_LEFT
        center = [sx * (width / 2 - arm_w / 2), (legs_h + arm_h) / 2, 0]
        parts.append(box(center, [depth / 2, (arm_h - legs_h) / 2, arm_w / 2], rotation, 0.04, relief))
    tilt = rng.uniform(0.05, 0.25)
    rotation = tilted_back(tilt)
    back_h = height - base_top + 0.05
    relief = _relief(rng, inner, back_h / 2, amp, ("dots", "grooves", "frame", "glyphs"), back_t)
    center = np.array([0, base_top - 0.05, -depth / 2 + back_t / 2]) + rotation @ [0, back_h / 2, 0]
    parts.append(box(center, [inner + arm_w * 0.5, back_h / 2, back_t / 2], rotation, 0.05, relief))
    return parts


FAMILIES: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    CHAIR: chair,
    TABLE: table,
    CABINET: cabinet,
    SOFA: sofa,
}


def family_parts(category: str, rng: np.random.Generator) -> list[Part]:
    """The parts of a random shape of ``category`` (a ShapeNet id in :data:`FAMILIES`)."""
    if category not in FAMILIES:
        known = ", ".join(f"{k} ({v})" for k, v in CATEGORY_NAMES.items())
        raise ValueError(f"no procedural family for category {category}; known: {known}")
    return FAMILIES[category](rng)


def generate_mesh(category: str, rng: np.random.Generator, resolution: int = DEFAULT_RESOLUTION) -> trimesh.Trimesh:
    """A random watertight mesh of ``category`` (a ShapeNet id in :data:`FAMILIES`), world frame."""
    return mesh_parts(family_parts(category, rng), resolution)
