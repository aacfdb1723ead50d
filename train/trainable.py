"""The parameters each stage trains (the rest frozen) and its training mode."""

from torch import nn

from models.networks.fnrmvs_net import FNRMVSNet

# Never used by the forward pass; the authors keep it only so that their checkpoints load.
UNUSED_PARAMETER_SUFFIX = "adap_bias_net.weight"


def select_trainable(model: FNRMVSNet, stage: str) -> list[nn.Parameter]:
    """Freeze everything but the stage's network; returns the parameters to optimise.

    Stage "regressor" trains ``model.regressor``, stage "optimizer" ``model.opt_layer`` (without the
    never-used ``adap_bias_net``).
    """
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    network = model.regressor if stage == "regressor" else model.opt_layer
    trainable = []
    for name, parameter in network.named_parameters():
        if not name.endswith(UNUSED_PARAMETER_SUFFIX):
            parameter.requires_grad_(True)
            trainable.append(parameter)
    return trainable


def set_train_mode(model: FNRMVSNet, stage: str) -> None:
    """Training mode for ``stage``: FNRMVSNet.train() keeps the regressor in eval, so stage
    "regressor" switches it back on (dropout active; its backbone BatchNorm stays frozen)."""
    model.train()
    if stage == "regressor":
        model.regressor.train()
