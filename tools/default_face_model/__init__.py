"""The pieces of the default face model's build (assembled by ``tools/build_default_face_model.py``)."""
