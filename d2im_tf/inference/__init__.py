"""From a trained network to meshes: extraction, reconstruction, SavedModel export, previews, imported weights."""
