"""Geometry shared by the data, the models and inference: the camera, the shape frames, image interpolation."""
