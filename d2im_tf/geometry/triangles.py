"""Exact point–triangle geometry, vectorised in NumPy (float64).

* :func:`closest_points_on_triangles` — the closest point of each triangle to a point, and which
  feature (face, edge, vertex) it lies on; the signed distances of the generated data use it.
* :func:`within_distance` — whether each point lies within a distance of a triangle soup. Exact: every
  triangle that can be that near is tested, found from its centroid and its reach (the centroid's
  distance to its farthest corner), bounded by bisecting large ones (:func:`split_to_reach`), so large
  faces are never missed. The evaluation's precision and recall use it.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

PAIR_CHUNK = 200_000  # point–triangle pairs evaluated at once (~100 MB of temporaries)


def closest_points_on_triangles(p, a, b, c) -> tuple[np.ndarray, np.ndarray]:
    """Closest points ``[M, 3]`` on triangles ``abc`` to ``p`` (all ``[M, 3]``) and the feature hit.

    Feature codes: 0 face, 1/2/3 vertex a/b/c, 4/5/6 edge ab/bc/ca (Ericson, *Real-Time Collision
    Detection* §5.1.5, evaluated for every case and selected in its order).
    """
    ab, ac, ap, bp, cp = b - a, c - a, p - a, p - b, p - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    vc, vb, va = d1 * d4 - d3 * d2, d5 * d2 - d1 * d6, d3 * d6 - d5 * d4
    t_ab = _safe_ratio(d1, d1 - d3)
    t_ca = _safe_ratio(d2, d2 - d6)
    t_bc = _safe_ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    total = va + vb + vc
    v, w = _safe_ratio(vb, total), _safe_ratio(vc, total)
    conditions = [
        (d1 <= 0) & (d2 <= 0),
        (d3 >= 0) & (d4 <= d3),
        (vc <= 0) & (d1 >= 0) & (d3 <= 0),
        (d6 >= 0) & (d5 <= d6),
        (vb <= 0) & (d2 >= 0) & (d6 <= 0),
        (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),
    ]
    zero, one = np.zeros_like(d1), np.ones_like(d1)
    weight_b = np.select(conditions, [zero, one, t_ab, zero, zero, 1 - t_bc], v)
    weight_c = np.select(conditions, [zero, zero, zero, one, t_ca, t_bc], w)
    feature = np.select(conditions, [1, 2, 4, 3, 6, 5], 0)
    return a + weight_b[:, None] * ab + weight_c[:, None] * ac, feature


def within_distance(points, triangles, distance: float, neighbours: int = 16) -> np.ndarray:
    """Whether each of ``points [N, 3]`` lies within ``distance`` (inclusive) of any of ``triangles
    [F, 3, 3]`` (corner coordinates), exactly.

    Triangles are first bisected (:func:`split_to_reach`, the same surface) until no corner lies
    farther than ``ρ = distance / 4`` from its centroid, so a triangle whose centroid is ``g`` away
    from a point is at least ``g − ρ`` away. The ``neighbours`` nearest centroids of each point are
    tested exactly: one within ``distance`` decides *near*; if even the farthest of them is beyond
    ``distance + ρ``, no other triangle can be near. The points left are tested against every
    triangle whose centroid lies within ``distance + ρ`` (a KD-tree ball query).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    near = np.zeros(len(points), dtype=bool)
    reach = distance / 4.0
    triangles = split_to_reach(triangles, reach)
    if len(points) == 0 or len(triangles) == 0:
        return near
    centroids = triangles.mean(axis=1)  # [F, 3]
    tree = cKDTree(centroids)
    count = min(neighbours, len(triangles))
    gaps, nearest = tree.query(points, k=count)  # [N, k] each
    gaps, nearest = gaps.reshape(len(points), count), nearest.reshape(len(points), count)
    _mark_near(near, points, triangles, np.repeat(np.arange(len(points)), count), nearest.ravel(), distance)
    undecided = np.nonzero(~near & (gaps[:, -1] - reach <= distance))[0]
    if len(undecided) and count < len(triangles):
        found = tree.query_ball_point(points[undecided], distance + reach)
        counts = np.fromiter((len(ids) for ids in found), dtype=np.int64, count=len(undecided))
        if counts.sum():
            triangle_ids = np.concatenate([np.asarray(ids, dtype=np.int64) for ids in found])
            _mark_near(near, points, triangles, np.repeat(undecided, counts), triangle_ids, distance)
    return near


def _mark_near(near, points, triangles, point_ids, triangle_ids, distance) -> None:
    """Set ``near[i]`` for the points ``i`` of the pairs ``(point_ids[k], triangle_ids[k])`` whose
    triangle lies within ``distance`` of them (exact closest points, in chunks)."""
    for start in range(0, len(point_ids), PAIR_CHUNK):
        p_ids, t_ids = point_ids[start : start + PAIR_CHUNK], triangle_ids[start : start + PAIR_CHUNK]
        undecided = ~near[p_ids]  # points already found near need no more tests
        p_ids, t_ids = p_ids[undecided], t_ids[undecided]
        corners = triangles[t_ids]  # [M, 3, 3]
        closest, _ = closest_points_on_triangles(points[p_ids], corners[:, 0], corners[:, 1], corners[:, 2])
        hit = np.sum((points[p_ids] - closest) ** 2, axis=1) <= distance * distance
        near[p_ids[hit]] = True


def split_to_reach(triangles, reach: float, max_rounds: int = 64) -> np.ndarray:
    """``triangles [F, 3, 3]`` bisected at the midpoint of their longest edge until none reaches
    farther than ``reach`` from its centroid: ``[F', 3, 3]``, covering exactly the same surface."""
    triangles = np.asarray(triangles, dtype=np.float64).reshape(-1, 3, 3)
    done = []
    for _ in range(max_rounds):
        large = _reach(triangles, triangles.mean(axis=1)) > reach
        done.append(triangles[~large])
        triangles = triangles[large]
        if len(triangles) == 0:
            break
        lengths = np.linalg.norm(triangles - np.roll(triangles, -1, axis=1), axis=2)  # [F, 3]: ab, bc, ca
        first = np.argmax(lengths, axis=1)  # the longest edge runs from corner `first` to the next
        order = (first[:, None] + np.arange(3)) % 3  # rotate so that it is edge 01
        rotated = np.take_along_axis(triangles, order[:, :, None], axis=1)
        a, b, c = rotated[:, 0], rotated[:, 1], rotated[:, 2]
        middle = 0.5 * (a + b)
        triangles = np.concatenate([np.stack([a, middle, c], axis=1), np.stack([middle, b, c], axis=1)])
    else:
        raise ValueError(f"triangles still larger than reach {reach:g} after {max_rounds} bisections")
    return np.concatenate(done)


def _reach(triangles: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The distance ``[F]`` from each triangle's centroid to its farthest corner."""
    return np.linalg.norm(triangles - centroids[:, None, :], axis=2).max(axis=1)


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, y)


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    safe = np.where(np.abs(denominator) > 1e-300, denominator, 1.0)
    return np.where(np.abs(denominator) > 1e-300, numerator / safe, 0.0)
