"""Silhouette agreement of a mesh with an image, without 3D ground truth.

A mesh is drawn with any 3×4 projection P (its frame → the image's pixels, the convention of
docs/conventions.md, "Camera") by casting a ray through every pixel centre from the optical centre
``C = −M⁻¹·p₄`` along ``M⁻¹·(u, v, 1)`` (M = P[:, :3]); a pixel is covered when its ray hits the mesh
in front of the camera. Its mask is compared with the image's foreground:

- ``iou``: |mesh ∩ foreground| / |mesh ∪ foreground|;
- ``outside``: the share of the mesh's projection that falls outside the foreground (phantom parts,
  a too-large or misplaced mesh);
- ``missed``: the share of the foreground the mesh does not cover (lost legs, a too-small mesh).

A silhouette can hide a mesh in pieces (a leg with a gap still covers its outline), so
:func:`fragmentation` counts the mesh's connected parts: ``parts``, those holding at least
``PART_SHARE`` of its surface area, and ``detached``, the share of the area outside the largest.
"""

from __future__ import annotations

import numpy as np
import trimesh

from d2im_tf.geometry import camera

PART_SHARE = 0.01  # a connected part counts when it holds this share of the mesh's surface area

AMBIENT, HEADLIGHT = 0.3, 0.7


def pixel_rays(projection: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(origin [3], directions [H·W, 3])`` (unit, row-major pixel order) of P's pixel-centre rays."""
    rows, columns = np.mgrid[0:height, 0:width]
    return camera.projection_centre_numpy(projection), camera.pixel_ray_directions(projection, rows, columns)


def render_with_projection(
    mesh: trimesh.Trimesh, projection: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(mask bool [H, W], shading float [H, W] in [0, 1])`` of ``mesh`` drawn with ``projection``.

    Shading is Lambertian under a headlight (1 on the background), enough to read the shape."""
    mask = np.zeros((height, width), bool)
    shading = np.ones((height, width))
    if len(mesh.faces) == 0:
        return mask, shading
    from trimesh.ray.ray_pyembree import RayMeshIntersector

    origin, directions = pixel_rays(projection, height, width)
    faces = RayMeshIntersector(mesh).intersects_first(np.broadcast_to(origin, directions.shape), directions)
    hit = faces >= 0
    mask.ravel()[hit] = True
    cosine = np.abs(np.einsum("ij,ij->i", mesh.face_normals[faces[hit]], directions[hit]))
    shading.ravel()[hit] = AMBIENT + HEADLIGHT * cosine
    return mask, shading


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def silhouette_scores(mesh_mask: np.ndarray, foreground: np.ndarray) -> dict:
    """``{"iou", "outside", "missed"}`` of a mesh's mask against an image's foreground (module docstring)."""
    mesh_mask, foreground = np.asarray(mesh_mask, bool), np.asarray(foreground, bool)
    both = np.logical_and(mesh_mask, foreground).sum()
    return {
        "iou": mask_iou(mesh_mask, foreground),
        "outside": float(1.0 - both / mesh_mask.sum()) if mesh_mask.any() else 0.0,
        "missed": float(1.0 - both / foreground.sum()) if foreground.any() else 0.0,
    }


def fragmentation(mesh: trimesh.Trimesh) -> dict:
    """``{"parts", "detached"}`` of a mesh (module docstring): parts connected through shared vertices
    (a mesh from marching cubes shares them), weighed by their triangles' area."""
    if len(mesh.faces) == 0:
        return {"parts": 0, "detached": 0.0}
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    areas = np.bincount(labels, weights=mesh.area_faces)  # [parts]
    total = areas.sum()
    return {"parts": int((areas >= PART_SHARE * total).sum()), "detached": float(1.0 - areas.max() / total)}
