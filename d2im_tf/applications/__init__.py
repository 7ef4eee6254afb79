"""The paper's applications of the disentangled field: detail transfer and paste-n-reconstruct."""
