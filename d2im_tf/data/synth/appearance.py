"""Randomised appearance for ``make-data --appearance varied``: materials, lights and their shading.

A shape gets one to three :class:`Material` s (wood with grain, fabric with a weave, brushed metal,
glossy plastic, matte paint), assigned per part: thin parts (legs, frames, handles) share one, the
others draw from the rest, so a chair may stand on metal legs under a fabric seat. A view gets a
:class:`Lighting`: an ambient term, a key light and an optional fill light from random directions in
the camera's frame, a share of headlight, and an exposure. :func:`shade` turns hit points, their
(smoothly interpolated) normals and the view direction into colours with Lambert diffuse and
Blinn–Phong highlights; textures are solid (functions of the world position), so they need no UV map.

Only the RGB image depends on any of this: the normal map, depth and SDF samples are computed from
the mesh alone.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

KINDS = ("wood", "fabric", "metal", "plastic", "paint")
THIN_PART = 0.045  # a part whose smallest half extent (family units) is below this is a "frame" part


@dataclass(frozen=True)
class Material:
    """A base colour (linear RGB in [0, 1]) and a kind of :data:`KINDS` with its shading parameters:
    ``specular`` strength, Blinn–Phong ``shininess``, and a texture (``frequency`` in cycles per world
    unit along ``axis``, ``contrast``; ``phase`` decorrelates two materials of the same kind)."""

    kind: str
    color: tuple[float, float, float]
    specular: float
    shininess: float
    frequency: float
    contrast: float
    axis: tuple[float, float, float]
    phase: float
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)  # a point of the grain's ring axis


def _hsv(h, s, v) -> tuple[float, float, float]:
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def random_material(rng: np.random.Generator, kind: str | None = None) -> Material:
    """A material of ``kind`` (random if None) with a colour typical of that kind."""
    kind = kind or str(rng.choice(KINDS, p=[0.3, 0.2, 0.15, 0.15, 0.2]))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    # the ring axis passes 0.5–2 world units away from the object: its rings cross it as gently bent stripes
    offset = np.cross(axis, rng.normal(size=3))
    offset *= rng.uniform(0.5, 2.0) / max(np.linalg.norm(offset), 1e-9)
    common = dict(
        axis=tuple(float(a) for a in axis), phase=float(rng.uniform(0, 100)), centre=tuple(float(c) for c in offset)
    )
    if kind == "wood":  # browns from pale oak to walnut, grain rings a few mm to cm apart
        color = _hsv(rng.uniform(0.04, 0.1), rng.uniform(0.35, 0.75), rng.uniform(0.25, 0.85))
        return Material(
            kind,
            color,
            float(rng.uniform(0.05, 0.25)),
            float(rng.uniform(8, 30)),
            float(rng.uniform(25, 70)),
            float(rng.uniform(0.06, 0.22)),
            **common,
        )
    if kind == "fabric":  # any hue, muted; a fine weave, no highlight
        color = _hsv(rng.uniform(), rng.uniform(0.05, 0.6), rng.uniform(0.2, 0.9))
        return Material(
            kind,
            color,
            float(rng.uniform(0.0, 0.04)),
            4.0,
            float(rng.uniform(120, 250)),
            float(rng.uniform(0.04, 0.12)),
            **common,
        )
    if kind == "metal":  # grey to slightly warm, strong tight highlights, faint brushing
        grey = rng.uniform(0.45, 0.85)
        color = _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.15), grey)
        return Material(
            kind,
            color,
            float(rng.uniform(0.4, 0.9)),
            float(rng.uniform(30, 120)),
            float(rng.uniform(150, 400)),
            float(rng.uniform(0.0, 0.06)),
            **common,
        )
    if kind == "plastic":  # saturated or white/black, a medium highlight
        if rng.uniform() < 0.3:
            color = _hsv(0.0, 0.0, rng.choice([rng.uniform(0.05, 0.2), rng.uniform(0.8, 0.95)]))
        else:
            color = _hsv(rng.uniform(), rng.uniform(0.5, 0.95), rng.uniform(0.5, 0.95))
        return Material(kind, color, float(rng.uniform(0.2, 0.5)), float(rng.uniform(15, 60)), 0.0, 0.0, **common)
    color = _hsv(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.3, 0.95))  # matte paint
    return Material("paint", color, float(rng.uniform(0.0, 0.1)), 8.0, 0.0, 0.0, **common)


def part_materials(rng: np.random.Generator, thin: np.ndarray) -> tuple[list[Material], np.ndarray]:
    """Materials of a shape and the index of each part's: ``thin [P]`` marks frame-like parts.

    A third of the shapes are one material; otherwise thin parts share one material (often metal or
    wood) and the other parts take one or two more, a whole group of equal parts the same."""
    count = len(thin)
    if rng.uniform() < 1 / 3:
        return [random_material(rng)], np.zeros(count, dtype=int)
    frame = random_material(rng, str(rng.choice(["metal", "wood", "plastic", "paint"], p=[0.4, 0.3, 0.15, 0.15])))
    body = [random_material(rng) for _ in range(int(rng.integers(1, 3)))]
    index = np.where(thin, 0, 1 + rng.integers(0, len(body), count) if len(body) > 1 else 1)
    if rng.uniform() < 0.5:  # most objects keep all their bulky parts alike
        index = np.where(thin, 0, 1)
    return [frame, *body], index.astype(int)


@dataclass(frozen=True)
class Lighting:
    """Lights of one view, directions towards the light in the camera frame (x right, y down, z away)."""

    ambient: float
    key_direction: tuple[float, float, float]
    key: float
    fill_direction: tuple[float, float, float]
    fill: float
    headlight: float
    exposure: float


def _towards(azimuth: float, elevation: float) -> tuple[float, float, float]:
    """Camera-frame unit vector towards a light ``azimuth`` right of the view axis, ``elevation`` up."""
    ca = np.cos(elevation)
    vector = np.array([ca * np.sin(azimuth), -np.sin(elevation), -ca * np.cos(azimuth)])
    return tuple(float(v) for v in vector / np.linalg.norm(vector))


def random_lighting(rng: np.random.Generator) -> Lighting:
    """A key light from the front half-space (±75° around the view axis, 5–75° up), a weaker fill."""
    side = rng.choice([-1.0, 1.0])
    key_direction = _towards(side * rng.uniform(0.0, 1.3), rng.uniform(0.1, 1.3))
    fill_direction = _towards(-side * rng.uniform(0.3, 1.5), rng.uniform(-0.2, 0.8))
    return Lighting(
        float(rng.uniform(0.15, 0.4)),
        key_direction,
        float(rng.uniform(0.45, 0.85)),
        fill_direction,
        float(rng.uniform(0.0, 0.35)),
        float(rng.uniform(0.0, 0.35)),
        float(rng.uniform(0.9, 1.2)),
    )


def _bands(points: np.ndarray, material: Material) -> np.ndarray:
    """Texture modulation in [-1, 1] ``[N]`` of world points ``[N, 3]`` for ``material``'s kind."""
    axis = np.asarray(material.axis)
    if material.kind == "wood":  # rings around an axis beside the object, wobbling
        relative = points - np.asarray(material.centre)
        along = relative @ axis
        radial = np.linalg.norm(relative - along[:, None] * axis, axis=1)
        wobble = 0.08 * np.sin(7.0 * along + material.phase) + 0.04 * np.sin(17.0 * points[:, 0] + material.phase)
        ring = np.sin(2 * np.pi * material.frequency * (radial + wobble))
        return np.sign(ring) * np.abs(ring) ** 0.5
    if material.kind in ("fabric", "metal"):  # a weave (two crossing waves) or brushing (one)
        other = np.cross(axis, [0.0, 1.0, 0.0] if abs(axis[1]) < 0.9 else [1.0, 0.0, 0.0])
        first = np.sin(2 * np.pi * material.frequency * (points @ axis) + material.phase)
        if material.kind == "metal":
            return first
        return 0.5 * (first + np.sin(2 * np.pi * material.frequency * (points @ other)))
    return np.zeros(len(points))


def shade(
    points: np.ndarray,
    normals: np.ndarray,
    view_directions: np.ndarray,
    material_index: np.ndarray,
    materials: list[Material],
    lighting: Lighting,
    to_world: np.ndarray,
) -> np.ndarray:
    """Colours ``[N, 3]`` in [0, 1] of hit ``points [N, 3]`` with unit ``normals [N, 3]`` seen along
    unit ``view_directions [N, 3]`` (camera → point), each of material ``materials[material_index]``.

    ``to_world`` rotates camera-frame vectors into the world (``Rᵀ`` of the world → camera rotation).
    Normals facing away from the viewer (interpolation near silhouettes) are flipped towards it.
    """
    normals = np.where(np.einsum("ij,ij->i", normals, view_directions)[:, None] > 0, -normals, normals)
    eye = -view_directions
    lights = [
        (to_world @ np.asarray(lighting.key_direction), lighting.key),
        (to_world @ np.asarray(lighting.fill_direction), lighting.fill),
    ]
    colors = np.zeros((len(points), 3))
    for index, material in enumerate(materials):
        chosen = material_index == index
        if not np.any(chosen):
            continue
        n, e = normals[chosen], eye[chosen]
        albedo = np.asarray(material.color) * (1.0 + material.contrast * _bands(points[chosen], material))[:, None]
        diffuse = lighting.ambient + lighting.headlight * np.clip(np.einsum("ij,ij->i", n, e), 0, 1)
        highlight = np.zeros(len(n))
        for direction, strength in lights:
            diffuse = diffuse + strength * np.clip(n @ direction, 0, 1)
            half = direction + e
            half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), 1e-12)
            facing = (n @ direction) > 0
            highlight += strength * facing * np.clip(np.einsum("ij,ij->i", n, half), 0, 1) ** material.shininess
        if material.kind == "metal":  # a sky/floor reflection: brighter where the mirror ray looks up
            mirror = 2 * np.einsum("ij,ij->i", n, e)[:, None] * n - e
            diffuse = diffuse * (0.75 + 0.35 * np.clip(mirror[:, 1], -1, 1))
        colors[chosen] = albedo * diffuse[:, None] + material.specular * highlight[:, None]
    return np.clip(colors * lighting.exposure, 0.0, 1.0)


@dataclass(frozen=True)
class Look:
    """The materials of one shape and the material of each of its faces (``face_material [F]``)."""

    materials: list[Material]
    face_material: np.ndarray


def random_look(rng: np.random.Generator, face_group: np.ndarray, thin: np.ndarray) -> Look:
    """Materials for a mesh whose faces belong to groups (``face_group [F]`` indexes ``thin [P]``)."""
    materials, group_material = part_materials(rng, np.asarray(thin, dtype=bool))
    return Look(materials, group_material[face_group])


def mesh_groups(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Parts of a mesh without a part list (user meshes): its connected components ``[F]``, and which are
    rod-like (second-smallest box extent below 8 % of the mesh's bounding diagonal) ``[P]``."""
    import trimesh

    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    diagonal = np.linalg.norm(np.ptp(mesh.vertices, axis=0))
    corners = np.asarray(mesh.vertices)[mesh.faces]  # [F, 3, 3]
    count = labels.max() + 1
    lower, upper = np.full((count, 3), np.inf), np.full((count, 3), -np.inf)
    np.minimum.at(lower, labels, corners.min(axis=1))
    np.maximum.at(upper, labels, corners.max(axis=1))
    return labels, np.sort(upper - lower, axis=1)[:, 1] < 0.08 * diagonal


def random_view_style(rng: np.random.Generator, render_sizes: tuple[int, ...]) -> tuple[Lighting, int | None]:
    """The lights of one view and the size its image is rendered at (None: the dataset's size)."""
    lighting = random_lighting(rng)
    return lighting, (int(rng.choice(render_sizes)) if render_sizes else None)
