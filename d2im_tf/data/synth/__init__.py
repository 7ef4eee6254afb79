"""The synthetic dataset generator: procedural shapes with relief, SDF samples from meshes, one shape's files."""
