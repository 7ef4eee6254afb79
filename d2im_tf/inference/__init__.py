"""From a trained network to meshes: mesh extraction from an SDF, reconstruction of images with an exported
SavedModel, and preview images."""
