"""From a trained network to meshes and to other runtimes: extraction, reconstruction, SavedModel export,
previews, imported weights, and the TFLite / TF.js conversions with their clients."""
