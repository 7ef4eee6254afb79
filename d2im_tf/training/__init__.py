"""Training: the resumable loop shared by the SDF and camera networks, and the two runs built on it."""
