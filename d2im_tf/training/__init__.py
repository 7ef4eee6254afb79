"""Training: one run of either network (:mod:`~d2im_tf.training.run`), on the resumable loop of
:mod:`~d2im_tf.training.loop`, with its callbacks, TensorBoard images, previews and distribution."""
