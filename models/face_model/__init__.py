"""The 3D morphable model: :class:`~models.face_model.morphable_model.MorphableModel` and its one linear
evaluation, the authors' face3d file layout, the built-in default model, the iBUG landmark layout, the tight
face region, adjacency tables and UV rasterisation tables, and procedural stand-in models for tests."""
