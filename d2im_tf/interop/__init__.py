"""Interoperability with the authors' PyTorch release: reading its checkpoints without PyTorch and copying
them into the Keras models."""
