"""Helpers the tests share that the package itself does not need (fixtures are in conftest.py)."""
import numpy as np
import tensorflow as tf

from d2im_tf.data import disn_format as fmt


def unproject(uv, depth, projection):
    """The inverse of :func:`d2im_tf.geometry.camera.project`: pixels ``[..., N, 2]`` and depths
    ``[..., N]`` back to points ``[..., N, 3]`` of the frame ``projection`` ``[..., 3, 4]`` projects."""
    uv = tf.convert_to_tensor(uv)
    depth = tf.cast(depth, uv.dtype)
    projection = tf.cast(projection, uv.dtype)
    homogeneous = tf.concat([uv * depth[..., None], depth[..., None]], axis=-1)  # [..., N, 3]
    shifted = homogeneous - projection[..., None, :, 3]
    # Solve M p = shifted for each point: p = shifted · M^-T.
    return tf.matmul(shifted, tf.linalg.inv(projection[..., :3]), transpose_b=True)


def read_depth(path) -> tuple[np.ndarray, np.ndarray]:
    """A 16-bit depth PNG as the generator writes it (:func:`d2im_tf.data.disn_format.write_depth`) →
    (depth float32 ``[H, W]``, mask bool ``[H, W]``)."""
    image = fmt.open_image(path)
    raw = np.asarray(image)
    assert raw.ndim == 2 and raw.dtype in (np.uint16, np.int32, np.uint8), f"{path}: mode {image.mode}"
    raw = raw.astype(np.int64)
    return (raw / fmt.DEPTH_SCALE).astype(np.float32), raw > 0
