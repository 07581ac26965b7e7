"""Geometry: surfaces extracted from fields (marching cubes), distance queries to meshes, and the
metrics that compare surfaces."""
