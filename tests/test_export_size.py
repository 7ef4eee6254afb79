"""A SavedModel export stores each weight once: the checkpoint's tensors add up to the two networks'
parameter count (4 bytes each), and the reloaded export gives the networks' own outputs."""

import numpy as np
import tensorflow as tf
from test_convert import parity_inputs


def test_export_stores_each_weight_once_and_reloads_equal(tiny_export):
    export = tiny_export("full", "none", with_camera=True)
    stored = tf.train.list_variables(str(export.path / "variables" / "variables"))
    values = sum(int(np.prod(shape)) for name, shape in stored if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
    parameters = export.sdf.count_params() + export.camera.count_params()
    assert values == parameters  # twice as many before: Keras wrappers and tf.Variables both saved
    data = (export.path / "variables" / "variables.data-00000-of-00001").stat().st_size
    assert 4 * parameters <= data < 4 * parameters * 1.05

    image, points, projection = parity_inputs(32, 100)
    loaded = tf.saved_model.load(str(export.path))
    assert len(loaded.variables) == len(export.sdf.variables) + len(export.camera.variables)
    outputs = loaded.signatures["serving_default"](
        image=tf.constant(image), points=tf.constant(points[None]), projection=tf.constant(projection)
    )
    expected = export.sdf.decode(
        export.sdf.encode(tf.constant(image), training=False), tf.constant(points[None]), tf.constant(projection)
    )
    np.testing.assert_allclose(outputs["sdf"].numpy(), expected["sdf"].numpy(), rtol=1e-5, atol=1e-5)
    pose = loaded.signatures["camera"](image=tf.constant(image))
    np.testing.assert_allclose(
        pose["rotation"].numpy(), export.camera(tf.constant(image), training=False)["rotation"].numpy(), atol=1e-5
    )
