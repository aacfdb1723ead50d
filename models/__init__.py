"""DFNRMVS reimplemented: multi-view 3D face reconstruction (Bai et al., CVPR 2020).

Sub-packages, by concern (dependencies point downwards in this list):

* :mod:`models.face_model`: the 3D morphable model, its file formats, derived tables and the built-in default;
* :mod:`models.geometry`: camera, normals and visibility, Procrustes, rasterisation;
* :mod:`models.networks`: the authors' networks (FNRMVSNet and its parts) and checkpoints;
* :mod:`models.nrmvs`: the learned optimisation's energy, feature sampling, unrolled steps and configuration;
* :mod:`models.fitting`: the weights-free multi-view fit;
* :mod:`models.synthesis`: rendered multi-view faces with ground truth (training data, benchmarks);
* :mod:`models.texture`: the UV texture fused from all views, de-lighting, textured rendering;
* :mod:`models.io`: photos, preprocessing, landmark detectors, mesh files and a case's output folder;
* :mod:`models.reconstruction`: the photos-to-meshes API used by ``demo.py``.

The names below are the public API; they are imported on first use. Installed with ``pip install .``, this
package is ``dfnrmvs`` (``import dfnrmvs; dfnrmvs.reconstruct([...])``); in the checkout it is ``models``.
"""

import importlib

_EXPORTS = {
    "reconstruct": ".reconstruction",
    "Reconstruction": ".reconstruction",
    "Reconstructor": ".reconstruction",
    "prepare_views": ".reconstruction",
    "network_inputs": ".io.preprocess",
    "create_detector": ".io.landmark_detectors",
    "FittingReconstructor": ".reconstruction",
    "LearnedReconstructor": ".reconstruction",
    "MorphableModel": ".face_model.morphable_model",
    "load_default_model": ".face_model.default_model",
    "FNRMVSNet": ".networks.fnrmvs_net",
    "load_checkpoint": ".networks.checkpoint",
    "fit_multiview": ".fitting.multiview_fit",
    "FitConfig": ".fitting.multiview_fit",
    "NRMVSConfig": ".nrmvs.config",
    "DFNRMVSError": ".errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
