"""Tasks: what is fitted (an image, an SDF, a radiance field), driven by the generic trainer."""
