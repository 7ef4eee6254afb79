"""Headless CPU renderer: embree ray casting through pixel centres with DISN's cameras.

For one view (a ``rendering_metadata.txt`` row) it produces an RGBA image (Lambert shading in the
shape's colour, white transparent background — DISN's renders are RGBA too; the alpha channel is
the mask), the camera-space normal map of the ``_mnormal`` convention (x right, y down, z away from
the viewer; surfaces facing the camera have n_z < 0), the depth map (z in the camera frame, the third
coordinate of ``P · [p; 1]``) and the mask. Normals are the mesh's face normals (flat shading).

:meth:`Renderer.render_appearance` renders only the RGBA image with randomised materials and lights
(:mod:`d2im_tf.data.synth.appearance`), supersampled and box-filtered (the alpha is the pixel's
coverage), optionally at another size and resampled; :func:`framed_views` sets each view's camera
distance so the object spans a given share of the image.

Rays pass through pixel centres ``(u + 0.5, v + 0.5)`` in the pixel convention of
:mod:`d2im_tf.geometry.camera` (pixel (0, 0)'s top-left corner is the origin), so a world point projected with
``camera.project`` falls in the pixel whose ray sees it. Only pixels inside the projection of the
mesh's bounding box are traced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from trimesh.ray.ray_pyembree import RayMeshIntersector

from d2im_tf.geometry import camera

BACKGROUND = 255  # RGB of background pixels (alpha 0)
AMBIENT, HEADLIGHT, SKYLIGHT = 0.25, 0.6, 0.2


def random_views(rng: np.random.Generator, count: int) -> np.ndarray:
    """``[count, 10]`` metadata rows as DISN's: az ∈ [0, 360), el ∈ [0, 45], distance ratio ∈ [0.6, 1]."""
    az = rng.uniform(0.0, 360.0, count)
    el = rng.uniform(0.0, 45.0, count)
    dist = rng.uniform(0.6, 1.0, count)
    zeros = np.zeros(count)
    constants = np.broadcast_to([camera.FOCAL_MM, camera.SENSOR_MM, camera.MAX_DISTANCE], (count, 3))
    return np.column_stack([az, el, zeros, dist, constants, zeros, zeros, zeros])


def projected_span(vertices: np.ndarray, row) -> float:
    """Largest extent of ``vertices [N, 3]`` projected in the view of metadata ``row``, as a share of
    the image side, measured from the image centre: ``2 · max |uv − centre| / S`` (independent of S)."""
    rotation, translation = camera.world_to_camera(float(row[0]), float(row[1]), float(row[3]))
    cam = vertices @ rotation.T + translation
    return float(2 * np.max(np.abs(cam[:, :2] / cam[:, 2:])) * camera.focal_pixels(1))


def framed_views(rng: np.random.Generator, count: int, vertices: np.ndarray, span=(0.45, 0.9)) -> np.ndarray:
    """Like :func:`random_views`, but each row's distance ratio is set so the object reaches
    ``s ~ U(span)`` of the image side (:func:`projected_span`, twice the largest offset from the centre):
    the renders of other datasets frame objects from about half to nine tenths of the image."""
    rows = random_views(rng, count)
    targets = rng.uniform(*span, count)
    hull = trimesh.convex.convex_hull(vertices).vertices if len(vertices) > 64 else vertices
    for row, target in zip(rows, targets):
        for _ in range(8):  # the span is nearly inverse in the distance: a few fixed-point steps
            row[3] *= projected_span(hull, row) / target
    return rows


@dataclass
class View:
    """One rendered view: ``rgba`` uint8 ``[S, S, 4]``, ``normals`` float ``[S, S, 3]`` (camera
    frame, zero on the background), ``depth`` float ``[S, S]`` (0 on the background), ``mask``."""

    rgba: np.ndarray
    normals: np.ndarray
    depth: np.ndarray
    mask: np.ndarray


class Renderer:
    """Renders one mesh (world frame) from any number of views."""

    def __init__(self, mesh: trimesh.Trimesh, color=(0.7, 0.7, 0.7)):
        self.color = np.asarray(color, dtype=np.float64)
        self.intersector = RayMeshIntersector(mesh)
        self.mesh = mesh
        self._vertex_normals = None  # computed on the first render_appearance
        self.face_normals = np.asarray(mesh.face_normals, dtype=np.float64)
        self.plane_points = np.asarray(mesh.vertices[mesh.faces[:, 0]], dtype=np.float64)
        self.corners = np.array(np.meshgrid(*mesh.bounds.T)).reshape(3, -1).T  # [8, 3] bounding box

    def render(self, row, image_size: int) -> View:
        """Render the view of metadata ``row`` (``[az, el, 0, d, ...]``) at ``image_size`` pixels."""
        az, el, dist = float(row[0]), float(row[1]), float(row[3])
        rotation, translation = camera.world_to_camera(az, el, dist)
        origin = camera.camera_centre(rotation, translation)
        pixels = self._covered_pixels(rotation, translation, image_size)  # [N, 2] (u, v)
        focal, centre = camera.focal_pixels(image_size), image_size / 2.0
        directions_cam = np.column_stack([(pixels + 0.5 - centre) / focal, np.ones(len(pixels))])
        directions = directions_cam @ rotation  # camera → world: Rᵀ d, row-wise
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        faces = self.intersector.intersects_first(np.broadcast_to(origin, directions.shape), directions)
        hit = faces >= 0
        pixels, directions, faces = pixels[hit], directions[hit], faces[hit]
        points = self._hit_points(origin, directions, faces)
        normals_world = self.face_normals[faces]
        return self._images(
            image_size,
            pixels,
            points @ rotation[2] + translation[2],
            normals_world @ rotation.T,
            self._shade(normals_world, directions),
        )

    def render_appearance(
        self, row, image_size: int, look, lighting, supersample: int = 3, render_size: int | None = None
    ) -> np.ndarray:
        """The RGBA image ``[S, S, 4]`` uint8 of the view ``row`` with ``look`` (a
        :class:`~d2im_tf.data.synth.appearance.Look`) under ``lighting``: rays through ``supersample²``
        points per pixel of a ``render_size`` image (default ``image_size``), box-filtered; the alpha is the
        covered share of each pixel and the RGB the mean colour of its covered rays. A ``render_size``
        other than ``image_size`` is resampled (bilinear, premultiplied) to ``image_size``."""
        from d2im_tf.data.synth.appearance import shade

        render_size = render_size or image_size
        fine = render_size * supersample
        az, el, dist = float(row[0]), float(row[1]), float(row[3])
        rotation, translation = camera.world_to_camera(az, el, dist)
        origin = camera.camera_centre(rotation, translation)
        pixels = self._covered_pixels(rotation, translation, fine)
        directions_cam = np.column_stack(
            [(pixels + 0.5 - fine / 2.0) / camera.focal_pixels(fine), np.ones(len(pixels))]
        )
        directions = directions_cam @ rotation
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        faces = self.intersector.intersects_first(np.broadcast_to(origin, directions.shape), directions)
        hit = faces >= 0
        pixels, directions, faces = pixels[hit], directions[hit], faces[hit]
        points = self._hit_points(origin, directions, faces)
        colors = shade(
            points,
            self._smooth_normals(points, faces),
            directions,
            look.face_material[faces],
            look.materials,
            lighting,
            rotation.T,
        )
        premultiplied = np.zeros((fine, fine, 4))
        premultiplied[pixels[:, 1], pixels[:, 0], :3] = colors
        premultiplied[pixels[:, 1], pixels[:, 0], 3] = 1.0
        premultiplied = premultiplied.reshape(render_size, supersample, render_size, supersample, 4).mean(axis=(1, 3))
        if render_size != image_size:
            premultiplied = _resample(premultiplied, image_size)
        alpha = premultiplied[..., 3:]
        rgb = np.where(alpha > 0, premultiplied[..., :3] / np.maximum(alpha, 1e-6), BACKGROUND / 255.0)
        rgba = np.round(np.clip(np.concatenate([rgb, alpha], axis=-1), 0, 1) * 255).astype(np.uint8)
        rgba[rgba[..., 3] == 0, :3] = BACKGROUND
        return rgba

    def _smooth_normals(self, points, faces) -> np.ndarray:
        """Vertex normals interpolated barycentrically at the hit ``points`` of ``faces``, unit ``[N, 3]``."""
        if self._vertex_normals is None:
            self._vertex_normals = np.asarray(self.mesh.vertex_normals, dtype=np.float64)
        corners = self.mesh.faces[faces]  # [N, 3]
        weights = trimesh.triangles.points_to_barycentric(self.mesh.vertices[corners], points)
        weights = np.clip(weights, 0.0, 1.0)
        normals = np.einsum("nk,nkj->nj", weights, self._vertex_normals[corners])
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        return np.where(length > 1e-9, normals / np.maximum(length, 1e-12), self.face_normals[faces])

    def _covered_pixels(self, rotation, translation, image_size: int) -> np.ndarray:
        """Integer pixel coordinates ``[N, 2]`` inside the projected bounding box (clipped)."""
        cam = self.corners @ rotation.T + translation
        uv = cam[:, :2] / cam[:, 2:] * camera.focal_pixels(image_size) + image_size / 2.0
        lower = np.clip(np.floor(uv.min(axis=0)).astype(int) - 1, 0, image_size)
        upper = np.clip(np.ceil(uv.max(axis=0)).astype(int) + 1, 0, image_size)
        u, v = np.meshgrid(np.arange(lower[0], upper[0]), np.arange(lower[1], upper[1]))
        return np.column_stack([u.ravel(), v.ravel()])

    def _hit_points(self, origin, directions, faces) -> np.ndarray:
        """Exact (float64) ray–plane intersections with the hit faces, ``[N, 3]``."""
        normals = self.face_normals[faces]
        along = np.einsum("ij,ij->i", self.plane_points[faces] - origin, normals)
        denominator = np.einsum("ij,ij->i", directions, normals)
        distance = along / np.where(np.abs(denominator) > 1e-12, denominator, 1e-12)
        return origin + distance[:, None] * directions

    def _shade(self, normals, directions) -> np.ndarray:
        """Lambert shading ``[N, 3]`` in [0, 1]: ambient, a headlight and a light from above."""
        headlight = np.clip(-np.einsum("ij,ij->i", normals, directions), 0.0, 1.0)
        sky = np.clip(normals[:, 1], 0.0, 1.0)
        intensity = AMBIENT + HEADLIGHT * headlight + SKYLIGHT * sky
        return np.clip(intensity[:, None] * self.color, 0.0, 1.0)

    @staticmethod
    def _images(size: int, pixels, depth, normals, colors) -> View:
        u, v = pixels[:, 0], pixels[:, 1]
        mask = np.zeros((size, size), dtype=bool)
        mask[v, u] = True
        depth_map = np.zeros((size, size))
        depth_map[v, u] = depth
        normal_map = np.zeros((size, size, 3))
        normal_map[v, u] = normals
        rgba = np.full((size, size, 4), BACKGROUND, dtype=np.uint8)
        rgba[..., 3] = 0
        rgba[v, u, :3] = np.round(colors * 255).astype(np.uint8)
        rgba[v, u, 3] = 255
        return View(rgba=rgba, normals=normal_map, depth=depth_map, mask=mask)


def _resample(image: np.ndarray, size: int) -> np.ndarray:
    """Float image ``[S, S, C]`` → ``[size, size, C]``, each channel with Pillow's (anti-aliased) bilinear filter."""
    from PIL import Image

    channels = [
        np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack(channels, axis=-1).astype(np.float64), 0.0, 1.0)
