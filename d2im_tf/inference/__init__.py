"""Deployment: the exported SavedModel converted for TFLite (LiteRT) and TF.js, and clients that run them."""
