"""The deterministic weight rule of the reference data (../shared/reference/WEIGHTS_RULE.md).

The reference outputs were produced without a trained checkpoint: every state-dict entry of
FNRMVSNet was set from its key name and shape alone. This module implements that rule so the
same weights can be rebuilt bit-exactly (float64 arithmetic in the documented order, then one
cast to the tensor's dtype):

* ``*num_batches_tracked`` -> 0, ``*running_mean`` -> 0, ``*running_var`` -> 1;
* 1-D ``*.weight`` (norm affine) -> 1; 1-D ``*.bias`` whose ``.weight`` sibling is 1-D -> 0;
* other 1-D ``*.bias`` (conv / linear) -> ``randn * 0.01 + offset(key)``;
* >= 2-D entries -> ``randn * (gain(key) / sqrt(fan_in))``, fan_in = prod(shape[1:]);
* keys in ``KEEP_ORIGINAL`` keep the constructor's value (expression basis / fixed scales).

``randn`` comes from a fresh ``numpy.random.default_rng(crc32(key))`` (PCG64) per key.
"""

import re
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

# Gain on the 1/sqrt(fan_in) standard deviation of >= 2-D weights; first matching pattern wins,
# default 1.0 (WEIGHTS_RULE.md, "gain(k)").
GAINS: tuple[tuple[re.Pattern[str], float], ...] = (
    (re.compile(r"^regressor\.(angles_fc|t_fc|s_fc)\.weight$"), 0.25),
    (re.compile(r"^regressor\.exp_fc\.weight$"), 0.05),
    (re.compile(r"^regressor\.iden_fc\.3\.weight$"), 0.05),
    (re.compile(r"^opt_layer\.step_net[234]\.net\.8\.weight$"), 0.05),
    (re.compile(r"^opt_layer\.adap_B_net2\.net\.6\.weight$"), 0.05),
    (re.compile(r"^opt_layer\.adap_B_net[34]\.net\.6\.weight$"), 5.0),
)
# Constant added to conv / linear biases, broadcast over the vector (WEIGHTS_RULE.md, "offset(k)").
BIAS_OFFSETS: tuple[tuple[re.Pattern[str], tuple[float, ...]], ...] = (
    (re.compile(r"^regressor\.angles_fc\.bias$"), (0.0, 0.5, 0.0)),  # pitch, yaw, roll
    (re.compile(r"^opt_layer\.step_net[234]\.net\.8\.bias$"), (-0.5, -0.5, 0.0, -0.5)),  # sp, ep, pose, ap
)
# Entries the rule leaves at their constructor values (expression PCA basis and scales).
KEEP_ORIGINAL: tuple[re.Pattern[str], ...] = (
    re.compile(r"^opt_layer\.adap_B_net2\.apEV$"),
    re.compile(r"^opt_layer\.adap_B_net2\.adapBias$"),
    re.compile(r"^opt_layer\.adap_B_net[34]\.apEV$"),
)
# Standard deviation of the random part of conv / linear biases.
BIAS_STD = 0.01


def key_seed(key: str) -> int:
    """Seed of the key's generator: CRC-32 of its UTF-8 bytes."""
    return zlib.crc32(key.encode("utf-8")) & 0xFFFFFFFF


def is_kept_original(key: str) -> bool:
    """True for the keys whose constructor value the rule keeps."""
    return any(p.match(key) for p in KEEP_ORIGINAL)


def rule_kind(key: str, shape: Sequence[int], sibling_weight_shape: Sequence[int] | None = None) -> str:
    """Branch of the rule for one entry, named as the ``kind`` field of state_dict_keys.json.

    ``sibling_weight_shape`` is the shape of ``<prefix>.weight`` for a ``<prefix>.bias`` key (None
    when there is no such entry); it tells a norm-layer bias (1-D sibling) from a conv / linear bias.
    """
    shape = tuple(shape)
    if is_kept_original(key):
        return "keep_original"
    for suffix in ("num_batches_tracked", "running_mean", "running_var"):
        if key.endswith(suffix):
            return suffix
    if len(shape) == 1 and key.endswith(".weight"):
        return "norm_weight"
    if len(shape) == 1 and key.endswith(".bias"):
        is_norm = sibling_weight_shape is not None and len(sibling_weight_shape) == 1
        return "norm_bias" if is_norm else "bias"
    if len(shape) >= 2:
        return "weight"
    raise ValueError(f"The weight rule has no branch for {key!r} with shape {shape}.")


def _first_match(key: str, table: Sequence[tuple[re.Pattern[str], object]], default: object) -> object:
    return next((value for pattern, value in table if pattern.match(key)), default)


def rule_tensor(
    key: str, shape: Sequence[int], dtype: torch.dtype, sibling_weight_shape: Sequence[int] | None = None
) -> torch.Tensor:
    """Value of one state-dict entry under the rule, as a CPU tensor of ``shape`` and ``dtype``.

    Args:
        key: full state-dict key of FNRMVSNet (e.g. ``"regressor.angles_fc.bias"``).
        shape: the entry's shape.
        dtype: the entry's dtype (float32, or int64 for ``num_batches_tracked``).
        sibling_weight_shape: for ``.bias`` keys, the shape of the ``.weight`` entry of the same
            module (None if absent), see ``rule_kind``.

    Raises ValueError for ``KEEP_ORIGINAL`` keys (their value comes from the morphable model).
    """
    shape = tuple(int(d) for d in shape)
    kind = rule_kind(key, shape, sibling_weight_shape)
    if kind == "keep_original":
        raise ValueError(f"{key!r} keeps its constructor value; the rule does not define it.")
    if kind in ("num_batches_tracked", "running_mean", "norm_bias"):
        return torch.zeros(shape, dtype=dtype)
    if kind in ("running_var", "norm_weight"):
        return torch.ones(shape, dtype=dtype)
    randn = np.random.default_rng(key_seed(key)).standard_normal(shape)
    if kind == "bias":
        offset = np.asarray(_first_match(key, BIAS_OFFSETS, 0.0), dtype=np.float64)
        value = randn * BIAS_STD + offset
    else:
        fan_in = int(np.prod(shape[1:]))
        value = randn * (float(_first_match(key, GAINS, 1.0)) / np.sqrt(fan_in))
    return torch.from_numpy(value).to(dtype)


def fill_with_reference_rule(model: nn.Module, prefix: str = "") -> None:
    """Overwrites every state-dict entry of ``model`` in place by the rule, except ``KEEP_ORIGINAL``.

    ``prefix`` is prepended to the model's own keys to form the FNRMVSNet key the rule sees,
    e.g. ``"regressor."`` to fill a stand-alone ``RegressionNet``.
    """
    state = model.state_dict(keep_vars=True)
    shapes: Mapping[str, tuple[int, ...]] = {k: tuple(v.shape) for k, v in state.items()}
    with torch.no_grad():
        for local_key, tensor in state.items():
            key = prefix + local_key
            if is_kept_original(key):
                continue
            sibling = shapes.get(local_key[: -len(".bias")] + ".weight") if local_key.endswith(".bias") else None
            tensor.copy_(rule_tensor(key, tensor.shape, tensor.dtype, sibling))
