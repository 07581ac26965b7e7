"""Data sources: images (and, later, meshes and NeRF scenes) read from the formats people have."""
