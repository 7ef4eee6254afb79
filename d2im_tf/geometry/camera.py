"""Camera geometry in the DISN / Blender convention (docs/conventions.md, "Camera").

NumPy builds the matrices of a rendered view from its metadata line (azimuth, elevation, distance
ratio); TensorFlow does everything that sits inside a model or a loss and must be batched and
differentiable: projection, the camera centre of a projection, the projection of a predicted pose,
the 6D rotation parameterisation and the camera network's point-cloud loss.

Frames: *world* is ShapeNet's (and the meshes' ``model.obj``); ``AXIS_CHANGE`` maps it to Blender's
object frame; ``[R | t]`` maps that to the camera frame, which looks along +z with image x to the right
and image y down. Pixel coordinates are continuous, pixel (0, 0)'s top-left corner at the origin, as in
the reference (principal point at (W/2, W/2)).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

FOCAL_MM = 35.0
SENSOR_MM = 32.0
MAX_DISTANCE = 1.75

# ShapeNet (y up) to Blender's object frame (z up); homogeneous 4x4.
AXIS_CHANGE = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
# Blender's object frame to its camera frame before the image-axes flip.
_CAM_ROT = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=np.float64)
# Blender's camera looks along -z with y up; image axes look along +z with y down.
_BLENDER_TO_IMAGE = np.diag([1.0, -1.0, -1.0])


def focal_pixels(image_size: int = 224) -> float:
    """Focal length in pixels for a square image of ``image_size`` pixels (245 px at 224)."""
    return FOCAL_MM * image_size / SENSOR_MM


def intrinsics(image_size: int = 224) -> np.ndarray:
    """The 3x3 intrinsic matrix K: focal 35 mm on a 32 mm sensor, principal point at the centre."""
    f = focal_pixels(image_size)
    c = image_size / 2.0
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def extrinsics(az_deg: float, el_deg: float, dist_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (3x3) and translation t (3,) from Blender's object frame to the camera frame."""
    sa, ca = np.sin(np.radians(-az_deg)), np.cos(np.radians(-az_deg))
    se, ce = np.sin(np.radians(-el_deg)), np.cos(np.radians(-el_deg))
    r_world2obj = np.array([[ca * ce, -sa, ca * se], [sa * ce, ca, sa * se], [-se, 0.0, ce]]).T
    r_obj2cam = _CAM_ROT.T
    rotation = _BLENDER_TO_IMAGE @ r_obj2cam @ r_world2obj
    translation = _BLENDER_TO_IMAGE @ (-r_obj2cam @ np.array([MAX_DISTANCE * dist_ratio, 0.0, 0.0]))
    return rotation, translation


def world_to_camera(az_deg: float, el_deg: float, dist_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (3x3) and translation (3,) taking world (ShapeNet) points to the camera frame.

    This is ``[R | t] · AXIS_CHANGE`` split into its rotation and translation parts.
    """
    rotation, translation = extrinsics(az_deg, el_deg, dist_ratio)
    return rotation @ AXIS_CHANGE[:3, :3], translation


def projection_matrix(az_deg: float, el_deg: float, dist_ratio: float, image_size: int = 224) -> np.ndarray:
    """The 3x4 matrix ``P = K · [R | t] · AXIS_CHANGE`` mapping homogeneous world points to pixels."""
    rotation, translation = world_to_camera(az_deg, el_deg, dist_ratio)
    return intrinsics(image_size) @ np.concatenate([rotation, translation[:, None]], axis=1)


def projection_from_metadata(row, image_size: int = 224) -> np.ndarray:
    """P for one ``rendering_metadata.txt`` row ``[az, el, 0, dist_ratio, ...]``."""
    return projection_matrix(float(row[0]), float(row[1]), float(row[3]), image_size)


def camera_centre(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """The optical centre ``−Rᵀ·t`` (shape (3,)) of the pose ``p' = R·p + t`` in the frame of ``p``.

    For a projection ``P = K·[R | t]`` it is the point with ``P·[C; 1] = 0``; :func:`projection_centre`
    finds it from P alone (the SDF network knows only P).
    """
    return -np.asarray(rotation).T @ np.asarray(translation)


def homogeneous_pixels(points: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """``P·[p; 1]`` ``[N, 3]`` = (u·w, v·w, w), float64, of ``points`` ``[N, 3]`` under ``projection``
    ``[3, 4]`` (or ``[1, 3, 4]``): w is the depth, positive in front of the camera."""
    projection = np.asarray(projection, np.float64).reshape(3, 4)
    return np.asarray(points, np.float64).reshape(-1, 3) @ projection[:, :3].T + projection[:, 3]


def project_numpy(points: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Pixel positions ``[N, 2]`` of ``points`` ``[N, 3]`` under ``projection`` ``[3, 4]`` (or ``[1, 3, 4]``):
    :func:`project` for one camera in NumPy."""
    homogeneous = homogeneous_pixels(points, projection)
    return homogeneous[:, :2] / homogeneous[:, 2:]


def projection_centre_numpy(projection: np.ndarray) -> np.ndarray:
    """The optical centre ``[3]`` of one ``projection`` ``[3, 4]`` (its null vector): :func:`projection_centre`
    in NumPy."""
    projection = np.asarray(projection, np.float64).reshape(3, 4)
    return -np.linalg.solve(projection[:, :3], projection[:, 3])


def pixel_ray_directions(projection: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Unit directions ``[N, 3]`` of the rays from :func:`projection_centre_numpy` through the centres
    of the pixels ``(rows [N], columns [N])``: M⁻¹·(u, v, 1) with M = P[:, :3], pointing in front of the
    camera (P·[C + λd; 1] = λ·(u, v, 1), so λ > 0 is depth)."""
    projection = np.asarray(projection, np.float64).reshape(3, 4)
    rows, columns = np.ravel(rows), np.ravel(columns)
    pixels = np.stack([columns + 0.5, rows + 0.5, np.ones(len(rows))], axis=1)  # [N, 3] homogeneous (u, v, 1)
    directions = np.linalg.solve(projection[:, :3], pixels.T).T
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# TensorFlow: batched, differentiable.


def project(points, projection):
    """Project world points to pixels.

    Args:
      points: ``[..., N, 3]`` world points.
      projection: ``[..., 3, 4]`` matrices P (broadcast against the leading axes of ``points``).
    Returns:
      ``(uv, depth)``: pixel coordinates ``[..., N, 2]`` (x right, y down) and depth ``[..., N]``.
    """
    points = tf.convert_to_tensor(points)
    projection = tf.cast(projection, points.dtype)
    homogeneous = tf.matmul(points, projection[..., :3], transpose_b=True) + projection[..., None, :, 3]
    depth = homogeneous[..., 2]
    uv = homogeneous[..., :2] / depth[..., None]
    return uv, depth


def transform_points(points, rotation, translation):
    """Apply ``p' = R p + t`` to ``[..., N, 3]`` points with ``[..., 3, 3]`` R and ``[..., 3]`` t."""
    points = tf.convert_to_tensor(points)
    rotation = tf.cast(rotation, points.dtype)
    translation = tf.cast(translation, points.dtype)
    return tf.matmul(points, rotation, transpose_b=True) + translation[..., None, :]


def projection_centre(projection):
    """The optical centre ``[B, 3]`` of projections ``[B, 3, 4]``: C = −M⁻¹·P[:, 3] with M = P[:, :3].

    The same point as :func:`camera_centre` of the pose, for any P = K·[R | t]·D (a folded
    normalisation D included), in the frame of the points P projects.
    """
    return -tf.linalg.solve(projection[:, :, :3], projection[:, :, 3:])[..., 0]


def projection_from_pose(rotation, translation, image_size: int):
    """P = K·[R | t] ``[B, 3, 4]`` from R ``[B, 3, 3]`` and t ``[B, 3]`` (a predicted pose)."""
    k = tf.constant(intrinsics(image_size), rotation.dtype)
    extrinsic = tf.concat([rotation, translation[..., None]], axis=-1)  # [B, 3, 4]
    return tf.matmul(k, extrinsic)


def reframed_pose(rotation, translation, transform, image_size: int):
    """The pose ``(R' [3, 3], t' [3])`` of a view whose image was re-framed by the pixel affine ``transform``
    ``[3, 3]`` (a scale s and a shift, :mod:`d2im_tf.data.framing`), the intrinsics K unchanged: the
    object (the frame's origin at its centre) is seen from the same direction, at 1/s of the distance,
    along the ray through the pixel ``transform`` moves its centre to. ``K·[R' | t']`` puts the centre
    exactly where ``transform·K·[R | t]`` does and draws the object s times larger, exactly so in the
    limit of a distant object (nearer, the perspective of the shorter distance shows). The camera
    network's target for a re-framed training image (``data.framing_object_size``)."""
    rotation, translation = tf.convert_to_tensor(rotation), tf.convert_to_tensor(translation)
    transform = tf.cast(transform, translation.dtype)
    f, c = focal_pixels(image_size), image_size / 2.0
    centre = transform @ tf.concat([f * translation[:2] / translation[2] + c, [1.0]], axis=0)[:, None]  # [3, 1]
    ray = tf.concat([(centre[:2, 0] - c) / f, [1.0]], axis=0)
    ray = ray / tf.norm(ray)  # the new direction of the centre, [3]
    distance = tf.norm(translation)
    before = translation / distance
    k = tf.linalg.cross(before, ray)  # the turn taking the old direction onto the new one (Rodrigues)
    cross = tf.stack([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])  # [k]ₓ
    turn = tf.eye(3, dtype=translation.dtype) + cross + cross @ cross / (1.0 + tf.reduce_sum(before * ray))
    return turn @ rotation, ray * distance / transform[0, 0]


def unreframed_pose(rotation, translation, transform, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`reframed_pose`: ``(R [3, 3], t [3])`` float32 of the view as given, from the
    pose ``(rotation, translation)`` of its image re-framed by ``transform`` ``[3, 3]`` (the pose a camera
    network trained on re-framed images predicts)."""
    rotation, translation = reframed_pose(
        np.asarray(rotation, np.float64), np.asarray(translation, np.float64), np.linalg.inv(transform), image_size
    )
    return np.asarray(rotation, np.float32), np.asarray(translation, np.float32)


def rotation_from_6d(b):
    """Zhou et al.'s 6D parameterisation ``[..., 6]`` to rotation matrices ``[..., 3, 3]``.

    ``R_x = N(b_x)``, ``R_z = N(R_x × b_y)``, ``R_y = R_z × R_x``, stacked as columns, so the
    result is orthonormal with determinant +1 for any ``b`` with independent halves.
    """
    b = tf.convert_to_tensor(b)
    r_x = tf.math.l2_normalize(b[..., :3], axis=-1)
    r_z = tf.math.l2_normalize(tf.linalg.cross(r_x, b[..., 3:]), axis=-1)
    r_y = tf.linalg.cross(r_z, r_x)
    return tf.stack([r_x, r_y, r_z], axis=-1)


def rotation_to_6d(rotation):
    """Inverse of :func:`rotation_from_6d` on rotations: the first two columns, ``[..., 6]``."""
    rotation = tf.convert_to_tensor(rotation)
    return tf.concat([rotation[..., :, 0], rotation[..., :, 1]], axis=-1)


def camera_pointcloud_loss(points, rotation_pred, translation_pred, rotation_true, translation_true):
    """Mean squared distance between a point cloud moved by the predicted and the true ``[R | t]``.

    ``points`` ``[B, N, 3]``; rotations ``[B, 3, 3]``; translations ``[B, 3]``. Returns a scalar.
    """
    moved_pred = transform_points(points, rotation_pred, translation_pred)
    moved_true = transform_points(points, rotation_true, translation_true)
    return tf.reduce_mean(tf.reduce_sum(tf.square(moved_pred - moved_true), axis=-1))
