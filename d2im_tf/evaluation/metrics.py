"""Evaluation metrics of the papers (D²IM-Net §4 and DISN §4; docs/conventions.md, "Metrics").

Shape metrics compare a reconstruction with the ground truth:

* :func:`chamfer_l1` — Chamfer-L1 in the Occupancy Networks convention: the mean of the two directed
  mean nearest-neighbour Euclidean distances (not squared, not summed).
* :func:`fscore` — harmonic mean of precision (fraction of ``a`` within ``threshold`` of ``b``) and
  recall (fraction of ``b`` within ``threshold`` of ``a``), on point samples of both surfaces as the
  papers compute it.
* :func:`surface_precision_recall` — the precision and recall of the evaluation's phantom-surface
  columns: samples of one surface within ``threshold`` of the other *surface* (exact distances).
* :func:`iou` — occupancy IoU on the 32³ voxel centres of a cube. The cube is, by default, the
  smallest axis-aligned cube holding both meshes' bounding boxes (so the 32 voxels span the shape
  whatever the data's normalisation), or ``bounds³`` if given. Occupancy is decided per voxel-centre
  line by ray parity in the six axis directions and a majority vote (:func:`occupancy`), which stays
  correct for a mesh with a few holes or one cut open by the extraction box.
* :func:`ecd_3d` — Chamfer-L1 between the *edge points* of the two surfaces: of 20K surface samples
  with face normals, those whose σ = min over the 10 nearest other samples of ``|n_i·n_j|`` is
  below 0.8.
* :func:`ecd_2d` — Chamfer in pixels between the Canny edge pixels of 224×224 normal maps of the two
  meshes rendered from one view, given as a ``rendering_metadata.txt`` row. The normal maps come from
  the dataset's renderer (:class:`d2im_tf.data.render.Renderer`: camera-frame flat-shaded face
  normals, zero on the background, the ``_mnormal`` convention), and the edges are the union of
  ``skimage.feature.canny`` on each of its three channels, with thresholds (:data:`CANNY_THRESHOLDS`)
  that keep creases and silhouettes and drop smooth shading.

A camera metric compares a predicted pose with the ground truth (DISN §4.2):

* :func:`pose_errors` — on a shape's surface points, ``d_3D``: the mean distance between the points
  taken to the camera frame by the two poses; ``d_2D``: the mean distance in pixels between their two
  projections on a 224×224 image; and the rotation error, the angle between the two rotations.

Empty inputs (a reconstruction with no surface, or a smooth surface without ECD-3D edges) give
finite values a table can show and a mean can absorb: when exactly one side is empty, a distance is
:data:`EMPTY_DISTANCE` (2√3, the diagonal of the normalised frame's box [-1, 1]³, where shapes are
compared: no two of its points are farther apart; for ECD-2D the image diagonal in pixels) and an
F-score or IoU is 0; when both sides are empty they agree perfectly: distance 0, F-score 1, IoU 1.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree
from skimage.feature import canny

from d2im_tf.data.render import Renderer
from d2im_tf.geometry.camera import intrinsics
from d2im_tf.geometry.frames import NORMALISED_BOX, box_diagonal
from d2im_tf.geometry.triangles import closest_points_on_triangles, within_distance

EMPTY_DISTANCE = box_diagonal(NORMALISED_BOX)

ECD_NEIGHBOURS = 10
ECD_THRESHOLD = 0.8
IMAGE_SIZE = 224
CANNY_SIGMA = 1.0
# Hysteresis thresholds on skimage's (unnormalised Sobel) gradient magnitude of one normal component
# in [-1, 1]: a sharp crease scores about 3, a fillet spread over ten pixels about 0.6, the smooth
# shading of a sphere filling a third of the image about 0.15.
CANNY_THRESHOLDS = (0.5, 1.0)


# --------------------------------------------------------------------------------------------
# Surface sampling and point-set distances


def sample_surface(mesh: trimesh.Trimesh, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` area-uniform surface points ``[count, 3]`` and their face normals ``[count, 3]``.

    An empty mesh (no faces, or zero area) gives two ``[0, 3]`` arrays.
    """
    if len(mesh.faces) == 0 or mesh.area <= 0.0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    points, face_index = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return np.asarray(points, dtype=np.float64), mesh.face_normals[face_index]


def _directed_distances(points_from: np.ndarray, points_to: np.ndarray) -> np.ndarray:
    """Distance from each of ``points_from [N, D]`` to its nearest neighbour in ``points_to [M, D]``."""
    distances, _ = cKDTree(points_to).query(points_from, k=1)
    return distances  # [N]


def chamfer_l1(points_a, points_b, empty_value: float = EMPTY_DISTANCE) -> float:
    """Symmetric Chamfer-L1 of two point sets ``[N, D]`` and ``[M, D]`` (module docstring)."""
    points_a, points_b = np.asarray(points_a, float), np.asarray(points_b, float)
    if len(points_a) == 0 or len(points_b) == 0:
        return 0.0 if len(points_a) == len(points_b) else float(empty_value)
    accuracy = _directed_distances(points_a, points_b).mean()
    completeness = _directed_distances(points_b, points_a).mean()
    return float(0.5 * (accuracy + completeness))


def precision_recall(points_a, points_b, threshold):
    """``(precision, recall)`` of ``points_a [N, 3]`` against ``points_b [M, 3]`` at ``threshold``
    (scalar or ``[T]``): the share of ``a`` within ``threshold`` of ``b``, and of ``b`` within it of ``a``.

    Floats for a scalar threshold, ``[T]`` arrays otherwise. On surface samples of a reconstruction
    (``a``) and the truth (``b``), precision falls with phantom sheets and floaters, recall with
    missing parts. One empty side gives 0 for both (the empty side has nothing near, and nothing is
    near it); two empty sides agree perfectly (1, 1).
    """
    thresholds = np.asarray(threshold, dtype=float)
    points_a, points_b = np.asarray(points_a, float), np.asarray(points_b, float)
    if len(points_a) == 0 or len(points_b) == 0:
        value = np.full(thresholds.reshape(-1).shape, 1.0 if len(points_a) == len(points_b) else 0.0)
        precision, recall = value, value
    else:
        to_b = _directed_distances(points_a, points_b)  # [N]
        to_a = _directed_distances(points_b, points_a)  # [M]
        precision = (to_b[:, None] <= thresholds.reshape(-1)).mean(axis=0)  # [T]
        recall = (to_a[:, None] <= thresholds.reshape(-1)).mean(axis=0)  # [T]
    if thresholds.ndim == 0:
        return float(precision[0]), float(recall[0])
    return precision.reshape(thresholds.shape), recall.reshape(thresholds.shape)


def surface_precision_recall(
    points_a, mesh_a: trimesh.Trimesh, points_b, mesh_b: trimesh.Trimesh, threshold: float
) -> tuple[float, float]:
    """``(precision, recall)`` at ``threshold`` measured against the surfaces themselves: the share of
    ``points_a [N, 3]`` (samples of ``mesh_a``) within ``threshold`` of the surface ``mesh_b``, and of
    ``points_b [M, 3]`` within it of ``mesh_a``.

    A sample's nearest sample of the other surface lies on that surface, so its distance bounds the
    distance to the surface from above: the samples it puts within ``threshold`` are near, and only the
    others get the exact point–triangle test (:func:`d2im_tf.geometry.triangles.within_distance`).
    Comparing sample sets alone (:func:`precision_recall`) overstates every distance by the gap between
    samples, about 0.01 for 20,000 samples of a cabinet in the normalised frame, a fifth of 0.05.
    Empty sides as in :func:`precision_recall`.
    """
    points_a, points_b = np.asarray(points_a, float), np.asarray(points_b, float)
    if len(points_a) == 0 or len(points_b) == 0:
        value = 1.0 if len(points_a) == len(points_b) else 0.0
        return value, value
    shares = []
    for points, others, other_mesh in ((points_a, points_b, mesh_b), (points_b, points_a, mesh_a)):
        near = _directed_distances(points, others) <= threshold  # [N]
        far = np.nonzero(~near)[0]
        near[far] = within_distance(points[far], other_mesh.triangles, threshold)
        shares.append(float(near.mean()))
    return shares[0], shares[1]


def fscore(points_a, points_b, threshold):
    """F-score of ``points_a [N, 3]`` against ``points_b [M, 3]`` at ``threshold`` (scalar or ``[T]``):
    the harmonic mean of :func:`precision_recall`.

    Returns a float for a scalar threshold, a ``[T]`` array otherwise. DISN's Table 2 uses thresholds
    of 0.5%–20% of the side of the volume. Two empty sets score 1, one empty set 0.
    """
    precision, recall = (np.asarray(v, float) for v in precision_recall(points_a, points_b, threshold))
    total = precision + recall
    score = np.where(total > 0, 2.0 * precision * recall / np.where(total > 0, total, 1.0), 0.0)
    return float(score) if np.ndim(threshold) == 0 else score


# --------------------------------------------------------------------------------------------
# Camera pose


def pose_errors(points, predicted, truth, image_size: int = IMAGE_SIZE) -> dict:
    """DISN's camera metrics of a ``predicted`` pose against the ``truth``, on ``points [N, 3]``.

    A pose is ``(R [3, 3], t [3])``, taking the points' frame to the camera frame (``x ↦ R·x + t``).
    Returns ``camera_d3d``, the mean distance between the two camera-frame positions of the points
    (the points' units); ``camera_d2d``, the mean distance in pixels between their projections with
    the fixed intrinsics at ``image_size`` (224 as DISN's Table 3; points at depth ≤ 0 in either camera
    are left out, and none in front gives the image diagonal); and ``rotation_error``, the angle of
    ``R_true·R_predᵀ`` in degrees. No points: both distances 0.
    """
    points = np.asarray(points, float).reshape(-1, 3)
    (rotation_pred, translation_pred), (rotation_true, translation_true) = (
        (np.asarray(r, float), np.asarray(t, float)) for r, t in (predicted, truth)
    )
    cosine = (np.trace(rotation_true @ rotation_pred.T) - 1.0) / 2.0
    errors = {
        "camera_d3d": 0.0,
        "camera_d2d": 0.0,
        "rotation_error": float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))),
    }
    if not len(points):
        return errors
    in_pred = points @ rotation_pred.T + translation_pred  # [N, 3] camera frame
    in_true = points @ rotation_true.T + translation_true
    errors["camera_d3d"] = float(np.linalg.norm(in_pred - in_true, axis=1).mean())
    front = (in_pred[:, 2] > 0) & (in_true[:, 2] > 0)
    if not front.any():
        errors["camera_d2d"] = float(np.sqrt(2.0) * image_size)
        return errors
    k = intrinsics(image_size)
    pixels_pred, pixels_true = ((k @ x[front].T).T for x in (in_pred, in_true))  # [M, 3] homogeneous
    offsets = pixels_pred[:, :2] / pixels_pred[:, 2:] - pixels_true[:, :2] / pixels_true[:, 2:]  # [M, 2]
    errors["camera_d2d"] = float(np.linalg.norm(offsets, axis=1).mean())
    return errors


# --------------------------------------------------------------------------------------------
# Volumetric IoU


def _voxel_axis(resolution: int, side: float) -> np.ndarray:
    """Voxel-centre coordinates ``[R]`` along one axis of a cube of ``side``, from its low corner."""
    return (np.arange(resolution) + 0.5) * (side / resolution)


def voxel_centres(resolution: int, low, side: float) -> np.ndarray:
    """The ``resolution³`` voxel centres of the cube ``low + [0, side]³``, ``[R, R, R, 3]``."""
    axis = _voxel_axis(resolution, side)  # [R]
    offsets = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)  # [R, R, R, 3]
    return np.asarray(low, float) + offsets


def near_surface(mesh: trimesh.Trimesh, resolution: int, low, side: float, distance: float) -> np.ndarray:
    """Whether each voxel centre of the cube ``low + [0, side]³`` lies within ``distance`` of the
    surface of ``mesh``, exactly: bool ``[R, R, R]``.

    Each triangle is tested against the centres inside its bounding box grown by ``distance`` (on a
    regular grid these are an index range per axis), so the work follows the surface, not the grid.
    """
    low = np.broadcast_to(np.asarray(low, float), (3,))
    step = side / resolution
    triangles = np.asarray(mesh.triangles, float)  # [F, 3, 3]
    near = np.zeros(resolution**3, dtype=bool)
    # centre k of an axis is at low + (k + 1/2)·step: the index range of each grown bounding box
    first = np.ceil((triangles.min(axis=1) - distance - low) / step - 0.5).astype(np.int64)  # [F, 3]
    last = np.floor((triangles.max(axis=1) + distance - low) / step - 0.5).astype(np.int64)
    first, last = np.clip(first, 0, resolution), np.clip(last, -1, resolution - 1)
    extent = np.maximum(last - first + 1, 0)  # [F, 3]
    counts = extent.prod(axis=1)
    axis = _voxel_axis(resolution, side)  # [R]
    for chunk in np.array_split(np.arange(len(triangles)), max(1, int(counts.sum() // 2_000_000) + 1)):
        ids = np.repeat(chunk, counts[chunk])  # one (triangle, centre) pair per entry
        if not len(ids):
            continue
        offsets = np.arange(len(ids)) - np.repeat(np.cumsum(counts[chunk]) - counts[chunk], counts[chunk])
        size = extent[ids]
        index = first[ids] + np.stack(
            [offsets // (size[:, 1] * size[:, 2]), offsets // size[:, 2] % size[:, 1], offsets % size[:, 2]], axis=-1
        )  # [P, 3]
        points = low + axis[index]  # [P, 3]
        corners = triangles[ids]
        closest, _ = closest_points_on_triangles(points, corners[:, 0], corners[:, 1], corners[:, 2])
        hit = np.einsum("ij,ij->i", points - closest, points - closest) <= distance**2
        flat = (index[hit, 0] * resolution + index[hit, 1]) * resolution + index[hit, 2]
        near[flat] = True
    return near.reshape([resolution] * 3)


def occupancy(mesh: trimesh.Trimesh, resolution: int, low, side: float) -> np.ndarray:
    """Inside/outside of the voxel centres of the cube ``low + [0, side]³``, bool ``[R, R, R]``.

    For each axis, one ray per line of voxel centres crosses the whole cube; the number of surface
    crossings before a centre (from the low end) and after it (towards the high end) give two parity
    votes, six in all. A centre is inside when at least four votes say so (a 3–3 tie is outside).
    """
    low = np.asarray(low, dtype=float)
    votes = np.zeros((resolution,) * 3, dtype=np.int64)
    if len(mesh.faces) == 0:
        return votes.astype(bool)
    centres_1d = _voxel_axis(resolution, side)  # [R], relative to low
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        u, v = np.meshgrid(centres_1d, centres_1d, indexing="ij")  # [R, R] line coordinates
        origins = np.zeros((resolution * resolution, 3))
        origins[:, others[0]] = u.reshape(-1)
        origins[:, others[1]] = v.reshape(-1)
        origins += low
        # Start outside both the cube and the mesh, so that crossings count from outside.
        origins[:, axis] = min(low[axis], mesh.bounds[0, axis]) - 1.0
        directions = np.zeros_like(origins)
        directions[:, axis] = 1.0
        below, total = _crossings_before(mesh, origins, directions, axis, low[axis] + centres_1d)
        inside = (below % 2 == 1).astype(np.int64) + ((total[:, None] - below) % 2 == 1)  # [R², R]
        # Lines are indexed (others[0], others[1]); put the votes back in (x, y, z) order.
        votes += np.moveaxis(inside.reshape(resolution, resolution, resolution), 2, axis)
    return votes >= 4


def _crossings_before(mesh, origins, directions, axis, centres):
    """Per ray ``[L]``: distinct surface crossings before each centre ``[L, R]`` and in total ``[L]``."""
    locations, ray_index, _ = mesh.ray.intersects_location(origins, directions, multiple_hits=True)
    coordinate = locations[:, axis]  # [H]
    # A ray through an edge or a vertex reports each adjoining face: keep one hit per location.
    keys = np.stack([ray_index, np.round(coordinate / 1e-9)], axis=1)
    _, unique = np.unique(keys, axis=0, return_index=True)
    ray_index, coordinate = ray_index[unique], coordinate[unique]
    # A hit at coordinate c lies before centre i exactly when i >= searchsorted(centres, c, "right").
    first_after = np.searchsorted(centres, coordinate, side="right")  # [H] in 0..R
    histogram = np.zeros((len(origins), len(centres) + 1), dtype=np.int64)
    np.add.at(histogram, (ray_index, first_after), 1)
    cumulative = np.cumsum(histogram, axis=1)  # [L, R+1]
    return cumulative[:, :-1], cumulative[:, -1]


def iou(mesh_a: trimesh.Trimesh, mesh_b: trimesh.Trimesh, resolution: int = 32, bounds=None) -> float:
    """Volumetric IoU of two meshes on ``resolution³`` voxel centres (box: module docstring).

    ``bounds=(lo, hi)`` fixes the cube to ``[lo, hi]³``; ``None`` uses the smallest cube holding both
    bounding boxes, centred on their union.
    """
    meshes = [m for m in (mesh_a, mesh_b) if len(m.faces)]
    if not meshes:
        return 1.0
    if bounds is None:
        corners = np.concatenate([m.bounds for m in meshes])  # [4, 3]
        box_low, box_high = corners.min(axis=0), corners.max(axis=0)
        side = float((box_high - box_low).max())
        low = 0.5 * (box_low + box_high) - side / 2.0
    else:
        side = float(bounds[1] - bounds[0])
        low = np.full(3, float(bounds[0]))
    inside_a = occupancy(mesh_a, resolution, low, side)
    inside_b = occupancy(mesh_b, resolution, low, side)
    union = np.count_nonzero(inside_a | inside_b)
    return float(np.count_nonzero(inside_a & inside_b) / union) if union else 1.0


# --------------------------------------------------------------------------------------------
# Edge Chamfer distances


def edge_points(points, normals, neighbours: int = ECD_NEIGHBOURS, threshold: float = ECD_THRESHOLD):
    """The samples of ``points [N, 3]`` (normals ``[N, 3]``) that lie on sharp edges, ``[E, 3]``.

    σ_i = min over the ``neighbours`` nearest other samples j of ``|n_i·n_j|``; kept where σ_i <
    ``threshold`` (0.8, about 37° between normals).
    """
    points, normals = np.asarray(points, float), np.asarray(normals, float)
    if len(points) <= neighbours:
        return np.zeros((0, 3))
    _, index = cKDTree(points).query(points, k=neighbours + 1)  # [N, k+1], column 0 is itself
    cosines = np.abs(np.einsum("nd,nkd->nk", normals, normals[index[:, 1:]]))  # [N, k]
    return points[cosines.min(axis=1) < threshold]


def ecd_3d(
    mesh_a: trimesh.Trimesh,
    mesh_b: trimesh.Trimesh,
    num_samples: int = 20000,
    neighbours: int = ECD_NEIGHBOURS,
    threshold: float = ECD_THRESHOLD,
    seed: int = 0,
) -> float:
    """ECD-3D: Chamfer-L1 between the edge points of ``num_samples`` samples of each surface.

    Both meshes are sampled with the same ``seed``, so identical meshes score exactly 0. Both edge
    sets empty (two smooth surfaces) gives 0; exactly one empty gives :data:`EMPTY_DISTANCE`.
    """
    edges = [
        edge_points(*sample_surface(mesh, num_samples, seed=seed), neighbours, threshold) for mesh in (mesh_a, mesh_b)
    ]
    return chamfer_l1(edges[0], edges[1])


def normal_map(mesh: trimesh.Trimesh, view, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Camera-frame normal map ``[S, S, 3]`` of ``mesh`` seen from metadata row ``view``; 0 = background."""
    if len(mesh.faces) == 0:
        return np.zeros((image_size, image_size, 3))
    return Renderer(mesh).render(view, image_size).normals


def normal_map_edges(normals: np.ndarray, sigma: float = CANNY_SIGMA) -> np.ndarray:
    """Canny edge pixels of a normal map ``[S, S, 3]``: union over channels, ``[E, 2]`` (row, col)."""
    low, high = CANNY_THRESHOLDS
    edges = np.zeros(normals.shape[:2], dtype=bool)
    for channel in range(normals.shape[2]):
        edges |= canny(normals[..., channel], sigma=sigma, low_threshold=low, high_threshold=high)
    return np.argwhere(edges).astype(float)


def ecd_2d(
    mesh_a: trimesh.Trimesh,
    mesh_b: trimesh.Trimesh,
    view,
    image_size: int = IMAGE_SIZE,
    sigma: float = CANNY_SIGMA,
) -> float:
    """ECD-2D in pixels: Chamfer-L1 between Canny edges of the two meshes' normal maps.

    ``view`` is a ``rendering_metadata.txt`` row ``[az, el, 0, dist_ratio, ...]`` (the ground truth's
    test view). Both edge sets empty gives 0; exactly one empty gives the image diagonal,
    ``image_size·√2``.
    """
    edges = [normal_map_edges(normal_map(mesh, view, image_size), sigma) for mesh in (mesh_a, mesh_b)]
    return chamfer_l1(edges[0], edges[1], empty_value=image_size * np.sqrt(2.0))
