"""Deployment: SavedModel export (TF Serving layout), conversion to TFLite and TF.js, and the reference
clients that run the converted models (LiteRT, and Node for TF.js)."""
