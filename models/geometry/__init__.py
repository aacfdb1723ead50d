"""Geometry of the method: the weak-perspective camera, normals and back-face visibility, mesh cropping and
landmark smoothing, similarity Procrustes, z-buffer rasterisation and spherical-harmonics shading.
Depends on nothing else in ``models`` (but :mod:`models.errors`)."""
