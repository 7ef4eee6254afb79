"""Mesh → DISN's ``ori_sample.h5`` content: normalisation, SDF samples, gradients and densities.

Used for the procedural shapes and for user meshes (e.g. ShapeNet ``model.obj``). The pipeline:

1. :func:`load_mesh` reads a file (``DataError`` naming it if unreadable, empty or degenerate);
   :func:`make_watertight` returns watertight meshes untouched and remeshes the others as the
   boundary of the region a flood fill from outside cannot reach (a thin shell for open sheets).
2. :func:`normalization`: centroid ``c`` of 16384 area-weighted surface samples and the largest
   distance ``m`` of those from it; the normalised frame is ``(world - c) / m``.
3. :class:`SignedDistance` gives exact distances to the mesh: a KD-tree over dense surface samples
   (each tagged with its face) proposes ``k`` candidate triangles per query, an exact vectorised
   point–triangle test picks the closest point, and the sign comes from the angle-weighted
   pseudo-normal of the closest feature (face, edge or vertex; Bærentzen & Aanæs 2005), which is
   exact for closed, consistently oriented meshes.
4. :func:`sample_sdf` draws near-surface candidates and keeps equal quotas in the four bands of
   ``sdf - 0.003`` (a band short of points passes its quota on to the next), and then, for this
   project's far-field supervision, uniform samples of the whole [-1, 1]³ box.
5. Gradients: analytic, ``sign · (p - q) / |p - q|`` with ``q`` the closest point (the pseudo-normal
   where ``p`` lies on the surface) for meshes; :func:`plane_fit_gradients` (least-squares plane
   through the SDF of the 10 nearest samples, as the reference) when only samples exist.
   :func:`sample_density`: 1 / (same-sign samples within 0.025 world units, itself included).
6. Optionally (:func:`with_coarse_sdf`), the SDF of a second mesh at the same points: the generated
   shape without its relief, a target for the base field that leaves the relief to the maps.
"""

from __future__ import annotations

import dataclasses
import shutil

import h5py
import numpy as np
import trimesh
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from d2im_tf.data.disn_format import DataError, SdfSamples, read_mesh, read_samples
from d2im_tf.geometry.frames import NORMALISED_BOX
from d2im_tf.geometry.triangles import closest_points_on_triangles
from d2im_tf.io import atomic_path

NORMALIZATION_SAMPLES = 16384
SAMPLE_COUNT = 32768
FAR_SAMPLE_COUNT = 4096  # uniform samples of the [-1, 1]³ box (ours; DISN's data has none)
ISO_OFFSET = 0.003  # bands are of sdf - 0.003
BANDS = ((-0.1, -0.03), (-0.03, 0.0), (0.0, 0.03), (0.03, 0.1))
DENSITY_RADIUS = 0.025  # world units
GRADIENT_NEIGHBOURS = 10


# ------------------------------------------------------------------------------------------
# Loading and repair


def load_mesh(path) -> trimesh.Trimesh:
    """A mesh file to convert (:func:`~d2im_tf.data.disn_format.read_mesh`), checked by :func:`check_mesh`."""
    mesh = read_mesh(path, "mesh file")
    check_mesh(mesh, path)
    return mesh


def check_mesh(mesh: trimesh.Trimesh, source) -> None:
    """Reject meshes without finite vertices or without area: ``DataError`` naming ``source``."""
    if len(mesh.faces) == 0:
        raise DataError(source, "mesh has no triangles")
    if not np.all(np.isfinite(mesh.vertices)):
        raise DataError(source, "mesh has NaN/Inf vertex coordinates")
    extent = float(np.max(mesh.extents))
    if extent <= 0 or mesh.area <= 1e-10 * extent**2:
        raise DataError(source, "degenerate mesh: all triangles have zero area")


def make_watertight(mesh: trimesh.Trimesh, source, resolution: int = 128) -> tuple[trimesh.Trimesh, bool]:
    """``(mesh, repaired)``: the mesh itself if closed and consistently wound, else a closed remesh.

    The remesh: unsigned distance on a grid with ``resolution`` cells along the longest side, voxels
    nearer than 0.75 cells to the surface are walls, a flood fill from the grid boundary marks the
    outside, and marching cubes extracts the boundary of the rest, offset outwards by about 0.4 cells.
    Open sheets become thin closed shells; signs are then right for the remeshed surface.
    """
    if mesh.is_watertight and mesh.is_winding_consistent:
        return (mesh if mesh.volume > 0 else _inverted(mesh)), False
    merged = mesh.copy()
    merged.merge_vertices()
    merged.update_faces(merged.nondegenerate_faces())
    if merged.is_watertight and merged.is_winding_consistent:
        return (merged if merged.volume > 0 else _inverted(merged)), True
    return _flood_fill_remesh(mesh, source, resolution), True


def _inverted(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    flipped = mesh.copy()
    flipped.invert()
    return flipped


def _flood_fill_remesh(mesh: trimesh.Trimesh, source, resolution: int) -> trimesh.Trimesh:
    spacing = float(np.max(mesh.extents)) / resolution
    origin = mesh.bounds[0] - 3 * spacing
    shape = tuple(int(n) for n in np.ceil((mesh.extents + 6 * spacing) / spacing) + 1)
    axes = [origin[i] + spacing * np.arange(shape[i]) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    surface = _dense_surface(mesh, spacing / 3)
    # Only distances below the level matter to marching cubes; far queries are cut off (fast).
    distance = cKDTree(surface).query(grid, distance_upper_bound=2 * spacing, workers=1)[0]
    distance = np.minimum(distance, 2 * spacing).reshape(shape)  # [X, Y, Z]
    wall = distance < 0.75 * spacing
    labels, _ = ndimage.label(~wall)
    faces_of_grid = [labels[[0, -1]], labels[:, [0, -1]], labels[:, :, [0, -1]]]
    border = np.unique(np.concatenate([f.ravel() for f in faces_of_grid]))
    outside = np.isin(labels, border[border > 0])
    signed = np.where(outside, distance, -distance)
    level = 0.4 * spacing
    if signed.min() >= level:
        raise DataError(source, "mesh is not watertight and could not be closed")
    vertices, faces, _, _ = marching_cubes(signed, level=level, spacing=(spacing,) * 3, gradient_direction="ascent")
    closed = trimesh.Trimesh(vertices + origin, faces, process=False)
    return closed if closed.volume > 0 else _inverted(closed)


def _dense_surface(mesh: trimesh.Trimesh, spacing: float, limit: int = 2_000_000) -> np.ndarray:
    """Surface points ``[S, 3]`` about ``spacing`` apart: vertices, face centroids, area samples."""
    count = int(min(limit, mesh.area / spacing**2))
    rng = np.random.default_rng(0)
    samples = _area_samples(mesh, count, rng)[0]
    return np.concatenate([mesh.vertices, mesh.triangles_center, samples])


def _area_samples(mesh: trimesh.Trimesh, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` area-weighted surface samples ``[count, 3]`` and their face indices ``[count]``."""
    areas = mesh.area_faces
    faces = rng.choice(len(areas), size=count, p=areas / areas.sum())
    r1, r2 = rng.random(count), rng.random(count)
    flip = r1 + r2 > 1
    r1, r2 = np.where(flip, 1 - r1, r1), np.where(flip, 1 - r2, r2)
    a, b, c = (mesh.vertices[mesh.faces[faces, i]] for i in range(3))
    return a + r1[:, None] * (b - a) + r2[:, None] * (c - a), faces


# ------------------------------------------------------------------------------------------
# Normalisation


def normalization(mesh: trimesh.Trimesh, rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """``(c (3,), m, surface points [16384, 3] in the normalised frame)``, as DISN's (docs/conventions.md, "Frames")."""
    points = _area_samples(mesh, NORMALIZATION_SAMPLES, rng)[0]
    center = points.mean(axis=0)
    scale = float(np.max(np.linalg.norm(points - center, axis=1)))
    return center, scale, (points - center) / scale


# ------------------------------------------------------------------------------------------
# Exact signed distance


class SignedDistance:
    """Exact signed distance to a closed, outward-oriented triangle mesh (negative inside)."""

    def __init__(
        self, mesh: trimesh.Trimesh, candidates: int = 8, spacing: float = 0.01, rng: np.random.Generator | None = None
    ):
        self.vertices = np.asarray(mesh.vertices, dtype=np.float64)
        self.faces = np.asarray(mesh.faces)
        self.candidates = candidates
        self._pseudo_normals(mesh)
        # Proposal points: every face centroid, plus area samples about ``spacing`` apart (at least
        # one per face on average) so that large faces are covered too.
        rng = rng or np.random.default_rng(0)
        count = int(min(max(len(self.faces), mesh.area / spacing**2), 2_000_000))
        samples, sample_faces = _area_samples(mesh, count, rng)
        points = np.concatenate([mesh.triangles_center, samples])
        self.point_faces = np.concatenate([np.arange(len(self.faces)), sample_faces])
        self.tree = cKDTree(points)

    def _pseudo_normals(self, mesh: trimesh.Trimesh) -> None:
        """Face normals, angle-weighted vertex normals and edge normals (sum of the two faces)."""
        a, b, c = (self.vertices[self.faces[:, i]] for i in range(3))
        cross = np.cross(b - a, c - a)
        length = np.linalg.norm(cross, axis=1, keepdims=True)
        self.face_normals = np.where(length > 0, cross / np.maximum(length, 1e-300), 0.0)
        angles = np.nan_to_num(mesh.face_angles)  # [F, 3]
        weighted = angles[:, :, None] * self.face_normals[:, None, :]  # [F, 3, 3]
        self.vertex_normals = np.zeros_like(self.vertices)
        np.add.at(self.vertex_normals, self.faces.ravel(), weighted.reshape(-1, 3))
        edges = np.sort(self.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 3, 2), axis=2)  # ab, bc, ca
        keys = edges[..., 0].astype(np.int64) * len(self.vertices) + edges[..., 1]  # [F, 3]
        _, edge_ids = np.unique(keys.ravel(), return_inverse=True)
        edge_normals = np.zeros((edge_ids.max() + 1, 3))
        np.add.at(edge_normals, edge_ids.ravel(), np.repeat(self.face_normals, 3, axis=0))
        self.face_edge_normals = edge_normals[edge_ids.reshape(-1, 3)]  # [F, 3 edges, 3]

    def query(self, points: np.ndarray, reach: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(sdf [N], closest points [N, 3], unit gradient [N, 3])`` for points ``[N, 3]``.

        Points with no surface proposal within ``reach`` (far from the surface; cheap to reject)
        get NaN everywhere.
        """
        k = self.candidates
        found, nearest = self.tree.query(points, k=k, distance_upper_bound=reach, workers=1)  # [N, k]
        far = ~np.isfinite(found[:, 0])
        nearest = np.where(np.isfinite(found), nearest, nearest[:, :1])  # pad with the nearest
        nearest[far] = 0
        faces = self.point_faces[nearest].reshape(-1)  # [N·k]
        repeated = np.repeat(points, k, axis=0)
        corners = [self.vertices[self.faces[faces, i]] for i in range(3)]
        closest, feature = closest_points_on_triangles(repeated, *corners)
        distance2 = np.sum((repeated - closest) ** 2, axis=1).reshape(-1, k)
        best = np.argmin(distance2, axis=1)
        pick = np.arange(len(points)) * k + best
        closest, feature, faces = closest[pick], feature[pick], faces[pick]
        normal = self._feature_normal(faces, feature)
        offset = points - closest
        distance = np.sqrt(distance2[np.arange(len(points)), best])
        sign = np.where(np.einsum("ij,ij->i", offset, normal) < 0, -1.0, 1.0)
        unit_normal = normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-300)
        on_surface = distance < 1e-9
        gradient = np.where(
            on_surface[:, None], unit_normal, sign[:, None] * offset / np.maximum(distance, 1e-300)[:, None]
        )
        sdf = np.where(far, np.nan, sign * distance)
        closest[far], gradient[far] = np.nan, np.nan
        return sdf, closest, gradient

    def _feature_normal(self, faces: np.ndarray, feature: np.ndarray) -> np.ndarray:
        """The pseudo-normal ``[N, 3]`` of each closest feature (not normalised)."""
        corner = np.clip(feature - 1, 0, 2)
        edge = np.clip(feature - 4, 0, 2)
        vertex_normal = self.vertex_normals[self.faces[faces, corner]]
        edge_normal = self.face_edge_normals[faces, edge]
        face_normal = self.face_normals[faces]
        is_vertex = ((feature >= 1) & (feature <= 3))[:, None]
        is_edge = (feature >= 4)[:, None]
        return np.where(is_vertex, vertex_normal, np.where(is_edge, edge_normal, face_normal))


# ------------------------------------------------------------------------------------------
# Samples


def _candidates(
    surface: np.ndarray, lower: np.ndarray, upper: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` candidate points: surface points jittered at three scales, plus uniform in the box."""
    scales = np.array([0.006, 0.02, 0.06])  # normalised units
    fractions = np.array([0.2, 0.35, 0.4])  # the rest (5 %) uniform
    jittered = []
    for scale, fraction in zip(scales, fractions):
        n = int(count * fraction)
        base = surface[rng.integers(0, len(surface), n)]
        jittered.append(base + rng.normal(scale=scale, size=(n, 3)))
    uniform = rng.uniform(lower, upper, size=(count - sum(len(j) for j in jittered), 3))
    return np.concatenate(jittered + [uniform])


def band_members(sdf: np.ndarray) -> list[np.ndarray]:
    """Indices of the samples in each of :data:`BANDS` of ``sdf - 0.003`` (NaN in none)."""
    shifted = sdf - ISO_OFFSET
    return [np.flatnonzero((shifted >= low) & (shifted < high)) for low, high in BANDS]


def band_takes(sizes: list[int], count: int) -> list[int]:
    """How many samples each band gives: equal quotas, a short band passing the rest to the next."""
    takes, carried = [], 0
    for size in sizes:
        quota = count // len(BANDS) + carried
        takes.append(min(quota, size))
        carried = quota - takes[-1]
    return takes


def select_bands(sdf: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of up to ``count`` samples drawn per :func:`band_takes` without replacement."""
    members = band_members(sdf)
    takes = band_takes([len(m) for m in members], count)
    chosen = [rng.choice(m, size=t, replace=False) for m, t in zip(members, takes)]
    return np.sort(np.concatenate(chosen))


def sample_sdf(
    mesh: trimesh.Trimesh,
    rng: np.random.Generator,
    count: int = SAMPLE_COUNT,
    candidates_per_sample: float = 2.0,
    with_density: bool = True,
    source="mesh",
    far_count: int = FAR_SAMPLE_COUNT,
) -> SdfSamples:
    """All of ``ori_sample.h5`` for a closed, outward-oriented mesh in the world frame.

    ``count`` must be a multiple of 4; ``source`` names the mesh in error messages. ``far_count``
    uniform samples of the normalised frame's [-1, 1]³ box (with exact SDF and gradients) go into
    ``pc_sdf_uniform`` / ``pc_gradients_uniform``; they are drawn after everything else, so the
    DISN datasets are the same with or without them.
    """
    center, scale, surface = normalization(mesh, rng)
    normalised = trimesh.Trimesh((mesh.vertices - center) / scale, mesh.faces, process=False)
    distance = SignedDistance(normalised, rng=rng)
    margin = BANDS[-1][1] + ISO_OFFSET
    lower, upper = normalised.bounds[0] - margin, normalised.bounds[1] + margin
    kept_points, kept_sdf, kept_gradients = [], [], []
    # The nearest proposal is within about its spacing (0.01) of a point's closest surface point.
    reach = margin + 0.05
    for _ in range(8):  # normally one round; more if the outermost band is short
        points = _candidates(surface, lower, upper, int(count * candidates_per_sample), rng)
        sdf, _, gradients = distance.query(points, reach)
        kept_points.append(points), kept_sdf.append(sdf), kept_gradients.append(gradients)
        sizes = [len(m) for m in band_members(np.concatenate(kept_sdf))]
        if sum(band_takes(sizes, count)) == count:
            break
    points, sdf, gradients = (np.concatenate(x) for x in (kept_points, kept_sdf, kept_gradients))
    index = select_bands(sdf, count, rng)
    if len(index) < count:
        raise DataError(source, f"only {len(index)} of {count} SDF samples could be drawn")
    points, sdf, gradients = points[index], sdf[index], gradients[index]
    far_points = rng.uniform(*NORMALISED_BOX, size=(far_count, 3))
    far_sdf, _, far_gradients = distance.query(far_points)
    return SdfSamples(
        samples=np.concatenate([points, sdf[:, None]], axis=1).astype(np.float32),
        norm_params=np.array([*center, scale], dtype=np.float32),
        surface_points=surface.astype(np.float32),
        sdf_params=np.concatenate([lower, upper]).astype(np.float32),
        gradients=gradients.astype(np.float32),
        density=sample_density(points * scale + center, sdf).astype(np.float32) if with_density else None,
        far_samples=np.concatenate([far_points, far_sdf[:, None]], axis=1).astype(np.float32) if far_count else None,
        far_gradients=far_gradients.astype(np.float32) if far_count else None,
    )


def with_coarse_sdf(samples: SdfSamples, coarse: trimesh.Trimesh) -> SdfSamples:
    """``samples`` with ``coarse_sdf`` (and ``far_coarse_sdf``): the exact signed distance of the same
    points to ``coarse``, a closed world-frame mesh of the shape without its relief, in the samples'
    normalised frame (``norm_params`` of the shape with its relief)."""
    center, scale = samples.norm_params[:3].astype(np.float64), float(samples.norm_params[3])
    distance = SignedDistance(trimesh.Trimesh((coarse.vertices - center) / scale, coarse.faces, process=False))
    coarse_sdf = distance.query(samples.points.astype(np.float64))[0].astype(np.float32)
    far = None
    if samples.far_samples is not None:
        far = distance.query(samples.far_samples[:, :3].astype(np.float64))[0].astype(np.float32)
    return dataclasses.replace(samples, coarse_sdf=coarse_sdf, far_coarse_sdf=far)


# ------------------------------------------------------------------------------------------
# Gradients and density from samples alone


def plane_fit_gradients(points: np.ndarray, sdf: np.ndarray, neighbours: int = GRADIENT_NEIGHBOURS) -> np.ndarray:
    """Unit SDF gradients ``[N, 3]``: least-squares plane ``sdf ≈ s0 + g·(x - x_i)`` through the
    ``neighbours`` nearest samples of each sample (itself included)."""
    _, nearest = cKDTree(points).query(points, k=neighbours, workers=1)  # [N, k]
    offsets = points[nearest] - points[:, None, :]  # [N, k, 3]
    design = np.concatenate([np.ones(offsets.shape[:2] + (1,)), offsets], axis=2)  # [N, k, 4]
    normal_matrix = np.einsum("nki,nkj->nij", design, design) + 1e-12 * np.eye(4)
    rhs = np.einsum("nki,nk->ni", design, sdf[nearest])
    gradient = np.linalg.solve(normal_matrix, rhs[..., None])[:, 1:, 0]
    return gradient / np.maximum(np.linalg.norm(gradient, axis=1, keepdims=True), 1e-12)


def sample_density(world_points: np.ndarray, sdf: np.ndarray, radius: float = DENSITY_RADIUS) -> np.ndarray:
    """1 / (number of samples of the same sign within ``radius`` world units, itself included)."""
    density = np.empty(len(sdf))
    for side in (sdf < 0, sdf >= 0):
        if np.any(side):
            group = world_points[side]
            counts = cKDTree(group).query_ball_point(group, radius, return_length=True, workers=1)
            density[side] = 1.0 / counts
    return density


def add_gradients_and_density(samples: SdfSamples) -> SdfSamples:
    """``samples`` with ``pc_gradients`` (plane fit) and ``density`` filled in where missing."""
    center, scale = samples.norm_params[:3], float(samples.norm_params[3])
    points = samples.points.astype(np.float64)
    sdf = samples.sdf.astype(np.float64)
    if samples.gradients is None:
        samples.gradients = plane_fit_gradients(points, sdf).astype(np.float32)
    if samples.density is None:
        samples.density = sample_density(points * scale + center, sdf).astype(np.float32)
    return samples


def add_fields_to_file(path, force: bool = False) -> bool:
    """Add ``pc_gradients`` and ``density`` to one ``ori_sample.h5`` lacking them (``force``: recompute
    both); the other datasets of the file are kept and the file is rewritten atomically. True if changed."""
    samples = read_samples(path)
    if samples.gradients is not None and samples.density is not None and not force:
        return False
    if force:
        samples.gradients, samples.density = None, None
    samples = add_gradients_and_density(samples)
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        try:
            with h5py.File(tmp, "r+") as h5:
                for name, array in (("pc_gradients", samples.gradients), ("density", samples.density)):
                    if name in h5:
                        del h5[name]
                    h5.create_dataset(name, data=array, track_times=False)
        except OSError as error:
            raise DataError(path, f"cannot update ({error})") from None
    return True
