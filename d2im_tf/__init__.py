"""d2im_tf: D²IM-Net (Li & Zhang, CVPR 2021) in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
