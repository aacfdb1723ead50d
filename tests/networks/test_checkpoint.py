"""Checkpoints: the authors' key layout loads strictly; mismatches are listed in one clear message."""

import json

import pytest
import torch

from models.face_model.morphable_model import MorphableModel
from models.networks.checkpoint import CheckpointError, load_checkpoint, read_state_dict, save_state_dict
from models.networks.fnrmvs_net import FNRMVSNet
from tools.face3d_writer import make_tiny_model, write_face3d_dir

DTYPES = {"float32": torch.float32, "int64": torch.int64}


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory):
    return FNRMVSNet(MorphableModel.load(write_face3d_dir(tmp_path_factory.mktemp("mm"), make_tiny_model())))


def test_authors_layout_loads_strictly(reference_dir, tmp_path):
    """A file with exactly the keys, shapes and dtypes of the authors' checkpoint loads with weights_only."""
    contract = json.loads((reference_dir / "state_dict_keys.json").read_text())["keys"]
    state = {e["key"]: torch.full(e["shape"], 0.5, dtype=DTYPES[e["dtype"]]) for e in contract}
    path = tmp_path / "2views_model.pth"
    torch.save(state, path)
    model = FNRMVSNet(MorphableModel.from_face3d_dir(reference_dir))
    load_checkpoint(model, path)
    assert torch.all(model.opt_layer.step_net3.net[0].weight == 0.5)
    assert len(model.state_dict()) == len(contract) == 733


def test_round_trip_and_training_wrapper(tiny_net, tmp_path):
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in tiny_net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    path = tmp_path / "net.pth"
    save_state_dict(tiny_net, path)
    wrapped = tmp_path / "train.pth"
    torch.save({"model": tiny_net.state_dict(), "step": 7}, wrapped)
    for source in (path, wrapped):
        state = read_state_dict(source)
        assert all(torch.equal(state[k], v) for k, v in tiny_net.state_dict().items())


def test_mismatches_are_listed(tiny_net, tmp_path):
    state = dict(tiny_net.state_dict())
    state.pop("regressor.s_fc.bias")
    state["extra.weight"] = torch.zeros(1)
    state["opt_layer.adap_B_net2.adapBias"] = torch.zeros(1, 30, 64)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tiny_net, path)
    message = str(error.value)
    assert "missing keys: regressor.s_fc.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "wrong shapes: opt_layer.adap_B_net2.adapBias (1, 30, 64)" in message
    assert "vertex count" in message and "\n" not in message


def test_unreadable_files(tmp_path, tiny_net):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tiny_net, tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tiny_net, tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_checkpoint(tiny_net, tmp_path / "list.pth")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would run",))


def test_pickled_code_is_refused_in_one_line(tmp_path, tiny_net):
    torch.save({"weights": torch.zeros(2), "payload": _RunsCode()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tiny_net, tmp_path / "evil.pth")
    message = str(caught.value)
    assert "\n" not in message and "refused" in message and "print" in message
    assert "weights_only" not in message  # no advice to turn the safety off
