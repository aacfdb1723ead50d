"""Colour for the reconstructed meshes: a UV texture fused from every view (visibility- and angle-weighted,
holes filled), an optional de-lit albedo, vertex colours and textured renders. Depends on
:mod:`models.geometry` and :mod:`models.face_model` only."""
