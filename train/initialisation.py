"""Start-up initialisation of an untrained optimisation layer, so that training from scratch starts sane.

Why: the unrolled optimisation descends ``0.25 * feature-metric + 0.025 * landmark`` with step sizes
``10 ** (scale * tanh(raw) + bias)`` (models/nrmvs/config.py). Freshly constructed, the step-size nets output
raw = 0 (their last layer starts at zero), i.e. steps of 10^0 for identity and adaptive coefficients and
10^-2.5 for the pose, and the feature pyramid's features are random. The gradients of the feature-metric
energy of random features are large (20-100x the landmark term's on generated faces with the default
model) and point nowhere in particular, so the first gradient steps throw the mesh away: from a pose
near the ground truth the face-region error goes 5 mm -> 30 mm after one step and the vertices overflow
by the fifth (``python -m train.train`` then logged losses of 1e20 or failed in the Procrustes SVD).

What (initial values only; nothing of the network's computation changes, and loading any checkpoint,
the authors' or a stage-1 result, overwrites all of it):

* the energy pyramid's outputs (``opt_layer.fpn``) are scaled by :data:`FEATURE_SCALE`: the feature-metric
  energy starts 1 / FEATURE_SCALE^2 smaller, so the first steps follow the (informative) landmark term
  while the features learn to agree across views. The pyramid's output at every level is
  ``relu(bn2(...) + merged)`` with ``merged`` linear in the lateral and coarsest 1x1 convolutions, so
  scaling those convolutions and the last GroupNorm's affine parameters scales the outputs exactly
  (up to GroupNorm's epsilon);
* the step-size nets' output bias is set to ``atanh(INITIAL_STEP_TANH)``: every step starts
  ``10 ** (scale * INITIAL_STEP_TANH)`` times its raw = 0 value (identity: 10^-0.5 at level 2, 10^-1 at
  levels 3 and 4; pose 10^-3 and 10^-3.5; adaptive 10^-1), away from tanh's saturation so that the nets
  can still learn larger or smaller steps. The last layer's weights stay zero (the constructor's).

Measured on generated faces of the default model, from the ground-truth pose plus noise (three
samples): with both, the face-region error falls monotonically over the nine steps (5.3 -> 4.5 mm,
landmark energy 84 -> 28 px^2); with the features scaled but raw = 0 steps it oscillates; with smaller
steps alone (the reference weights' offsets) it still grows to 6-14 mm.

:func:`initialise_for_training` is applied by ``train.train`` when a run starts from fresh weights, and
to an ``--init`` checkpoint whose optimisation layer was never trained (:func:`is_untrained`, e.g. a
stage-1 result written before this initialisation existed).
"""

import math
import re

import torch

from models.networks.fnrmvs_net import FNRMVSNet

# Factor on the energy feature pyramid's initial outputs (the feature-metric energy starts 1e-2 times smaller).
FEATURE_SCALE = 0.1
# tanh of the step-size nets' initial outputs (0 is the constructor's value; -1 would saturate).
INITIAL_STEP_TANH = -0.25

# State-dict keys (the authors' checkpoint layout, stable by contract) of the parameters set here: the
# energy pyramid's 1x1 convolutions and last GroupNorm of each level, and the step-size nets' last Linear.
PYRAMID_OUTPUT_SCALES = re.compile(
    r"opt_layer\.fpn\.(coarsest_conv\.weight|layer\d+\.lateral_conv\.weight|layer\d+\.out_conv\.bn2\.(weight|bias))"
)
STEP_NET_OUTPUT = "opt_layer.step_net{level}.net.8"


def _levels(model: FNRMVSNet) -> list[int]:
    return [level.level for level in model.opt_layer.config.levels]


def is_untrained(model: FNRMVSNet) -> bool:
    """True when every step-size net's last layer is still all zero (the constructor's values): the
    optimisation layer was never trained nor initialised for training."""
    parameters = dict(model.named_parameters())
    for level in _levels(model):
        prefix = STEP_NET_OUTPUT.format(level=level)
        if parameters[f"{prefix}.weight"].any() or parameters[f"{prefix}.bias"].any():
            return False
    return True


@torch.no_grad()
def initialise_for_training(model: FNRMVSNet) -> None:
    """Set the start-up values of the module docstring on ``model`` (in place)."""
    parameters = dict(model.named_parameters())
    for name, parameter in parameters.items():
        if PYRAMID_OUTPUT_SCALES.fullmatch(name):
            parameter.mul_(FEATURE_SCALE)
    for level in _levels(model):
        parameters[f"{STEP_NET_OUTPUT.format(level=level)}.bias"].fill_(math.atanh(INITIAL_STEP_TANH))
