"""Tests of train/dataset.py, train/loaders.py, train/config.py and train/train.py on a tiny generated set.

The data are rendered by train/synthetic.py from a 20 x 20 synthetic morphable model; the network is the
compact one (train/compact_network.py, the same heads, optimisation and losses as FNRMVSNet's with small
backbones), so every step stays cheap; the tests keep N <= 2, V = 2 and take only a handful of steps.
Convergence of the recipe is tested in test_recipe.py.
"""

import dataclasses
import json
import math
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from torch import nn

from models.geometry import camera
from models.networks.checkpoint import load_checkpoint, read_state_dict, save_state_dict
from train import train as T
from train.checkpoints import save_model
from train.config import ConfigError, TrainConfig, parse_config
from train.dataset import IMAGENET_MEAN, IMAGENET_STD, DatasetError, MultiViewFaceDataset, collate_samples
from train.errors import NonFiniteError
from train.initialisation import initialise_for_training
from train.loaders import ViewGroupedBatches
from train.logs import TRAIN_LOG, VAL_LOG
from train.training_state import STATE_FILE

from .tiny_training import GRID_SIDE, VIEWS, compact, tiny_model, tiny_set

# Pixels the second training sample is shifted by (image, landmarks, mesh and pose alike).
SHIFT_PX = 6


# ------------------------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The model (.npz), start-up initialised compact weights, one rendered sample and a shifted copy of it."""
    root = tmp_path_factory.mktemp("training")
    mm = tiny_model()
    mm.save_npz(root / "mm.npz")
    torch.manual_seed(0)
    model = compact(mm, TrainConfig())
    initialise_for_training(model)
    save_state_dict(model, root / "init.pth")
    (sample,) = tiny_set(mm, root / "rendered", count=1)
    shifted = root / "shifted"
    write_shifted_copy(sample, shifted, SHIFT_PX)
    return {"root": root, "mm": root / "mm.npz", "init": root / "init.pth", "sample": sample, "shifted": shifted}


def write_shifted_copy(source: Path, target: Path, shift: int) -> None:
    """The sample moved ``shift`` pixels to the right: a second, consistent sample."""
    target.mkdir()
    views = 0
    while (source / f"view{views}.png").is_file():
        image = np.asarray(Image.open(source / f"view{views}.png"))
        Image.fromarray(np.roll(image, shift, axis=1)).save(target / f"view{views}.png")
        views += 1
    with np.load(source / "sample.npz") as content:
        arrays = {key: content[key].copy() for key in content.files}
    for key in ("landmarks", "vertices", "landmarks3d"):
        arrays[key][..., 0] += shift
    arrays["pose"][:, 4] += shift / camera.TRANSLATION_STD
    np.savez(target / "sample.npz", **arrays)


def data_folder(root: Path, name: str, samples: dict[str, Path]) -> Path:
    """A data folder holding copies of ``samples`` (folder name -> sample folder)."""
    folder = root / name
    for sample_name, sample in samples.items():
        shutil.copytree(sample, folder / sample_name)
    return folder


# --------------------------------------------------------------------------------------------- dataset
def test_dataset_returns_the_sample_normalised(assets: dict[str, Path]) -> None:
    dataset = MultiViewFaceDataset(assets["sample"].parent, num_vertices=GRID_SIDE * GRID_SIDE)
    assert len(dataset) == 1 and dataset.views == VIEWS
    item = dataset[0]
    with np.load(assets["sample"] / "sample.npz") as content:
        for key in ("landmarks", "vertices", "landmarks3d", "pose"):
            np.testing.assert_array_equal(item[key].numpy(), content[key])
    pixels = np.asarray(Image.open(assets["sample"] / "view1.png"), dtype=np.float32) / 255.0
    np.testing.assert_allclose(item["raw_images"][1].permute(1, 2, 0).numpy(), pixels, atol=1e-7)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(item["images"], (item["raw_images"] - mean) / std)
    assert item["images"].shape == (VIEWS, 3, 256, 256) and item["name"] == assets["sample"].name
    batch = collate_samples([item, item])
    assert batch["vertices"].shape == (2, VIEWS, GRID_SIDE * GRID_SIDE, 3) and batch["name"] == [item["name"]] * 2


def _break_npz(folder: Path, **changes: np.ndarray | None) -> None:
    with np.load(folder / "sample.npz") as content:
        arrays = {key: content[key] for key in content.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(folder / "sample.npz", **arrays)


BREAKAGES = {
    "missing sample.npz": (lambda f: (f / "sample.npz").unlink(), "sample.npz not found", "init"),
    "one view": (lambda f: (f / "view1.png").unlink(), "at least 2 needed", "init"),
    "small image": (lambda f: Image.new("RGB", (64, 64)).save(f / "view0.png"), "expected 256x256", "item"),
    "not an image": (lambda f: (f / "view1.png").write_text("text"), "not a readable image", "item"),
    "landmark shape": (lambda f: _break_npz(f, landmarks=np.zeros((2, 5, 2))), "'landmarks' has shape", "item"),
    "no vertices": (lambda f: _break_npz(f, vertices=None), "missing array(s) vertices", "item"),
    "vertex count": (lambda f: _break_npz(f, vertices=np.zeros((2, 7, 3))), "the morphable model 400", "item"),
    "nan pose": (lambda f: _break_npz(f, pose=np.full((2, 6), np.nan)), "'pose' must hold finite", "item"),
    "not npz": (lambda f: (f / "sample.npz").write_text("text"), "not a readable .npz", "item"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_dataset_errors_are_one_line_naming_the_sample(assets: dict[str, Path], tmp_path: Path, breakage: str) -> None:
    folder = data_folder(tmp_path, "data", {"sample_a": assets["sample"]}) / "sample_a"
    damage, message, when = BREAKAGES[breakage]
    damage(folder)
    with pytest.raises(DatasetError) as error:
        MultiViewFaceDataset(folder.parent, num_vertices=GRID_SIDE * GRID_SIDE)[0]
    text = str(error.value)
    assert message in text and str(folder) in text and "\n" not in text
    if when == "item":  # found only when the sample is read, not when the folder is listed
        MultiViewFaceDataset(folder.parent, num_vertices=GRID_SIDE * GRID_SIDE)


def test_dataset_folder_level_errors(assets: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data folder not found"):
        MultiViewFaceDataset(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no sample folders"):
        MultiViewFaceDataset(tmp_path / "empty")
    mixed = data_folder(tmp_path, "mixed", {"a": assets["sample"], "b": assets["sample"]})
    Image.new("RGB", (256, 256)).save(mixed / "b" / "view2.png")
    with pytest.raises(DatasetError, match=r"b: 3 views, expected 2"):
        MultiViewFaceDataset(mixed, views=2)
    partial = data_folder(tmp_path, "partial", {"a": assets["sample"], "b": assets["sample"]})
    _break_npz(partial / "b", landmarks3d=None)
    dataset = MultiViewFaceDataset(partial)
    with pytest.raises(DatasetError, match="samples a and b differ in optional arrays \\(landmarks3d\\)"):
        collate_samples([dataset[0], dataset[1]])


def test_samples_of_2_and_3_views_are_batched_apart(assets: dict[str, Path], tmp_path: Path) -> None:
    mixed = data_folder(tmp_path, "mixed", {"a": assets["sample"], "b": assets["sample"]})
    Image.new("RGB", (256, 256)).save(mixed / "b" / "view2.png")
    _break_npz(mixed / "b", **{k: np.concatenate([v, v[:1]]) for k, v in _arrays(mixed / "b").items()})
    dataset = MultiViewFaceDataset(mixed)
    assert dataset.view_counts == [2, 3] and dataset.views is None
    assert dataset[1]["images"].shape[0] == 3 and dataset[1]["vertices"].shape[0] == 3
    with pytest.raises(DatasetError, match="differ in their number of views"):
        collate_samples([dataset[0], dataset[1]])


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "sample.npz") as content:
        return {key: content[key] for key in content.files if content[key].ndim and content[key].shape[0] == VIEWS}


def test_view_grouped_batches_cover_the_epoch_once_per_process() -> None:
    """Batches hold one view count; two processes take equally many batches (padded by repeating the
    first ones) that together cover every sample; epochs reshuffle; ``start`` skips batches."""
    counts = [2, 3, 2, 3, 2, 2, 3, 2]
    shares = [ViewGroupedBatches(counts, batch_size=2, num_replicas=2, rank=rank, seed=5) for rank in (0, 1)]
    batches = [share.epoch_batches() for share in shares]
    assert len(batches[0]) == len(batches[1]) == 3  # 5 batches (2-view: 2 + 2 + 1, 3-view: 2 + 1), padded to 6
    for batch in batches[0] + batches[1]:
        assert len({counts[i] for i in batch}) == 1 and 1 <= len(batch) <= 2
    assert sorted({i for share in batches for batch in share for i in batch}) == list(range(len(counts)))
    assert shares[0].epoch_batches() == batches[0]  # deterministic
    shares[0].set_epoch(1)
    assert shares[0].epoch_batches() != batches[0]
    shares[0].set_epoch(0)
    shares[0].start = 2
    assert list(shares[0]) == batches[0][2:] and len(shares[0]) == 1
    ordered = ViewGroupedBatches(counts, batch_size=2, shuffle=False, pad=False).epoch_batches()
    assert ordered == [[0, 2], [4, 5], [7], [1, 3], [6]]


# ---------------------------------------------------------------------------------------------- config
def test_config_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"stage": "regressor", "data": "d", "mm": "m.npz", "out": "o", "lr": 1, "epochs": 3}))
    config = parse_config(["--config", str(path), "--epochs", "5", "--no-progress"])
    values = (config.stage, config.lr, config.epochs, config.progress, config.batch_size)
    assert values == ("regressor", 1.0, 5, False, 2)
    path.write_text(json.dumps({"data": "d", "mm": "m", "out": "o", "learning_rate": 1}))
    with pytest.raises(ConfigError, match=r"run.json: unknown option\(s\) learning_rate"):
        parse_config(["--config", str(path)])
    path.write_text(json.dumps({"data": "d", "mm": "m", "out": "o", "epochs": "3"}))
    with pytest.raises(ConfigError, match="'epochs' must be int"):
        parse_config(["--config", str(path)])
    with pytest.raises(ConfigError, match="--batch-size must be positive"):
        parse_config(["--data", "d", "--mm", "m", "--out", "o", "--batch-size", "0"])
    with pytest.raises(ConfigError, match="data is required"):
        parse_config(["--mm", "m", "--out", "o"])


def test_config_yaml(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "run.yaml"
    path.write_text("stage: optimizer\ndata: d\nmm: m\nout: o\nmax_steps: 7\nval_data: null\n")
    config = parse_config(["--config", str(path)])
    assert config.max_steps == 7 and config.val_data is None and config.lr == 2e-5
    path.write_text("stage: [optimizer\n")
    with pytest.raises(ConfigError, match="run.yaml: not valid YAML"):
        parse_config(["--config", str(path)])


def test_cli_reports_a_missing_data_folder_in_one_line(
    assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--data", str(tmp_path / "nowhere"), "--mm", str(assets["mm"]), "--out", str(tmp_path / "out")]
    assert T.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'nowhere'}: data folder not found"
    assert not (tmp_path / "out").exists()  # nothing that would refuse the corrected rerun


# -------------------------------------------------------------------------------------------- settings
BAD_SETTINGS = {
    "infinite lr": (["--lr", "inf"], "--lr must be a finite number, got inf"),
    "zero lr": (["--lr", "0"], "--lr must be positive, got 0.0"),
    "negative head": (["--n-shape-para", "-3"], "--n-shape-para must be positive, got -3"),
    "nan clipping": (["--clip-grad-norm", "nan"], "--clip-grad-norm must be a finite number, got nan"),
    "negative warm-up": (["--warmup-steps", "-1"], "--warmup-steps must not be negative, got -1"),
    "unknown keep": (["--keep", "last,everything"], "--keep takes a comma-separated list of last, best, epochs"),
    "zero batch": (["--batch-size", "0"], "--batch-size must be positive, got 0"),
    "negative epochs": (["--epochs", "-2"], "--epochs must be positive, got -2"),
    "zero max steps": (["--max-steps", "0"], "--max-steps must be positive, got 0"),
    "negative workers": (["--workers", "-1"], "--workers must not be negative, got -1"),
    "negative skips": (["--max-skipped", "-1"], "--max-skipped must not be negative, got -1"),
    "nan units": (["--model-units-per-mm", "nan"], "--model-units-per-mm must be a finite number, got nan"),
}


@pytest.mark.parametrize("setting", sorted(BAD_SETTINGS))
def test_bad_settings_end_in_one_line_before_anything_is_written(
    assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, setting: str
) -> None:
    flags, message = BAD_SETTINGS[setting]
    argv = ["--data", str(assets["sample"].parent), "--mm", str(assets["mm"]), "--out", str(tmp_path / "out")]
    assert T.main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_folder_without_an_earlier_run(
    assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--data", str(tmp_path / "nowhere"), "--mm", str(assets["mm"])]
    (tmp_path / "file").write_text("mine")
    assert T.main([*argv, "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"error: --out {tmp_path / 'file'}: exists and is not a folder\n"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / T.CONFIG_COPY).write_text("{}")
    assert T.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: --out {tmp_path / 'run'}: holds an earlier run (config.json)") and "--overwrite" in err
    )
    assert (tmp_path / "run" / T.CONFIG_COPY).read_text() == "{}"


# -------------------------------------------------------------------------------------------- training
def _config(assets: dict[str, Path], **values) -> TrainConfig:
    return TrainConfig(mm=str(assets["mm"]), batch_size=1, progress=False, device="cpu", **values)


def test_regressor_stage_resume_matches_an_uninterrupted_run(assets: dict[str, Path], tmp_path: Path) -> None:
    """Two samples, batch 1: stopping after step 1 and resuming continues inside the epoch, with the
    same sample order, weights, Adam state and dropout masks, so the next loss is bitwise equal."""
    data = data_folder(tmp_path, "data", {"a": assets["sample"], "b": assets["shifted"]})
    val = data_folder(tmp_path, "val", {"a": assets["sample"]})
    # A large learning rate so that one step changes the next loss visibly.
    common = {"stage": "regressor", "data": str(data), "val_data": str(val), "init": str(assets["init"])}
    common.update(epochs=2, lr=1e-3, seed=3)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    uninterrupted = T.train(_config(assets, out=str(whole), max_steps=2, **common), compact)
    first = T.train(_config(assets, out=str(parts), max_steps=1, **common), compact)
    resumed = T.train(_config(assets, out=str(parts), max_steps=2, resume=str(parts / STATE_FILE), **common), compact)

    assert first.losses == uninterrupted.losses[:1]
    assert resumed.losses == uninterrupted.losses[1:]
    assert uninterrupted.losses[1] != uninterrupted.losses[0]
    resumed_state = resumed.model.state_dict()
    for key, value in uninterrupted.model.state_dict().items():
        assert torch.equal(value, resumed_state[key]), key
    assert [row.split(",")[0] for row in (parts / TRAIN_LOG).read_text().splitlines()] == ["step", "1", "2"]

    # Validation after the epoch (step 2), identical in both runs; mm = px / (pose scale) / 1000 per view.
    assert first.validations == [] and resumed.validations == uninterrupted.validations
    (validation,) = resumed.validations
    assert validation.views == VIEWS and np.isfinite(validation.landmark_px)
    with np.load(assets["sample"] / "sample.npz") as content:
        scale = camera.denormalize_pose(torch.from_numpy(content["pose"])).scale
    assert validation.vertex_px / float(scale.max()) / 1000 <= validation.vertex_mm
    assert validation.vertex_mm <= validation.vertex_px / float(scale.min()) / 1000
    rows = (parts / VAL_LOG).read_text().splitlines()
    assert rows[0] == "step,epoch,vertex_px,vertex_mm,landmark_px,views" and rows[1].startswith("2,0,")
    files = sorted(path.name for path in parts.iterdir())
    assert files == sorted([T.LAST_MODEL, T.BEST_MODEL, STATE_FILE, T.CONFIG_COPY, TRAIN_LOG, VAL_LOG]), files

    # The bare state dict (the authors' format) loads strictly; only the regressor trained.
    load_checkpoint(first.model, parts / T.LAST_MODEL)
    initial = read_state_dict(assets["init"])
    changed = {k.split(".")[0] for k, v in first.model.state_dict().items() if not torch.equal(v, initial[k])}
    assert changed == {"regressor"}
    assert all(torch.equal(v, resumed_state[k]) for k, v in first.model.state_dict().items())


def test_model_files_are_kept_as_asked(assets: dict[str, Path], tmp_path: Path) -> None:
    """--keep last,epochs without the resume state; --overwrite replaces the earlier run's files."""
    data = data_folder(tmp_path, "data", {"a": assets["sample"]})
    out = tmp_path / "out"
    common = {"stage": "regressor", "data": str(data), "val_data": str(data), "out": str(out), "epochs": 2}
    T.train(_config(assets, keep="last,epochs", save_state=False, **common), compact)
    files = sorted(path.name for path in out.iterdir())
    epochs = [T.EPOCH_MODEL.format(epoch=epoch) for epoch in (1, 2)]
    assert files == sorted([T.LAST_MODEL, *epochs, T.CONFIG_COPY, TRAIN_LOG, VAL_LOG]), files
    assert read_state_dict(out / epochs[1]).keys() == read_state_dict(out / T.LAST_MODEL).keys()
    T.train(_config(assets, keep="best", overwrite=True, **common), compact)
    files = sorted(path.name for path in out.iterdir())
    assert files == sorted([T.BEST_MODEL, STATE_FILE, T.CONFIG_COPY, TRAIN_LOG, VAL_LOG]), files


def _broken(mm, config: TrainConfig):
    """The compact network with a NaN in the level-2 step-size net: every optimisation step is NaN."""
    model = compact(mm, config)
    with torch.no_grad():
        model.opt_layer.step_net2.net[0].weight[0, 0] = float("nan")
    return model


def test_non_finite_batches_are_skipped_then_stop_the_run_in_one_line(
    assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first bad batch is skipped with a warning (nothing updated), the second exceeds --max-skipped 1:
    exit status 2, one line naming the step and the term, and no model file written."""
    monkeypatch.setattr(T, "default_model", _broken)
    data = data_folder(tmp_path, "data", {"a": assets["sample"], "b": assets["shifted"]})
    out = tmp_path / "out"
    argv = ["--stage", "optimizer", "--data", str(data), "--mm", str(assets["mm"]), "--out", str(out)]
    argv += ["--batch-size", "1", "--max-skipped", "1", "--no-progress", "--device", "cpu"]
    assert T.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    problem = "the optimisation's vertices at level 2 step 1 are not finite"
    assert lines[-2].startswith("warning: step 1 (samples ") and problem in lines[-2] and "1 of at most 1" in lines[-2]
    assert lines[-1].startswith("error: step 1 (samples ") and problem in lines[-1]
    assert "stopped after 2 skipped batch(es) (--max-skipped 1)" in lines[-1]
    assert not (out / T.LAST_MODEL).exists() and not (out / STATE_FILE).exists()
    assert (out / TRAIN_LOG).read_text().splitlines() == [
        "step,epoch,loss,vert,aligned_vert,land,normal,edge,lr,grad_norm,skipped,seconds"
    ]


def _diverging_in_evaluation(mm, config: TrainConfig):
    """The compact network whose meshes are not finite in evaluation mode (finite weights, trains as usual)."""
    model = compact(mm, config)

    def diverge(module: nn.Module, inputs: tuple, output):
        if module.training:
            return output
        return dataclasses.replace(output, corrected_vertices=[v * math.inf for v in output.corrected_vertices])

    model.register_forward_hook(diverge)
    return model


def test_a_validation_mesh_that_is_not_finite_counts_as_infinite_error(
    assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No traceback from the alignment's SVD: the epoch's validation is logged as infinite, a one-line warning says
    so, model_best.pth is not written and the run ends normally."""
    monkeypatch.setattr(T, "default_model", _diverging_in_evaluation)
    data = data_folder(tmp_path, "data", {"a": assets["sample"]})
    out = tmp_path / "out"
    argv = ["--stage", "optimizer", "--data", str(data), "--val-data", str(data), "--mm", str(assets["mm"])]
    argv += ["--out", str(out), "--batch-size", "1", "--no-progress", "--device", "cpu"]
    assert T.main(argv) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: validation")]
    assert len(warning) == 1 and "after epoch 1" in warning[0] and "not finite" in warning[0]
    rows = (out / VAL_LOG).read_text().splitlines()
    assert rows[1].split(",")[2:5] == ["inf", "inf", "inf"]  # vertex_px, vertex_mm, landmark_px
    assert (out / T.LAST_MODEL).exists() and not (out / T.BEST_MODEL).exists()


def test_a_model_with_non_finite_weights_is_never_saved(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.bias[1] = float("inf")
    with pytest.raises(NonFiniteError, match=r"not saved, 1 weight tensor\(s\) are not finite: bias"):
        save_model(model, tmp_path / "model.pth")
    assert list(tmp_path.iterdir()) == []
    with torch.no_grad():
        model.bias[1] = 0.0
    save_model(model, tmp_path / "model.pth")
    assert torch.equal(read_state_dict(tmp_path / "model.pth")["bias"], model.bias.detach())


# ---------------------------------------------------------------------------------------- distributed
def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _distributed_worker(rank: int, world_size: int, port: int, config: TrainConfig, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    torch.set_num_threads(1)
    result = T.train(config, compact)
    torch.save({"losses": result.losses, "state": result.model.state_dict()}, Path(out) / f"rank{rank}.pt")


def test_two_process_gloo_run_keeps_the_ranks_identical(assets: dict[str, Path], tmp_path: Path) -> None:
    """DistributedDataParallel over the second-order optimisation: one step, one sample per rank."""
    data = data_folder(tmp_path, "data", {"a": assets["sample"], "b": assets["shifted"]})
    out = tmp_path / "out"
    config = _config(assets, stage="optimizer", data=str(data), out=str(out), init=str(assets["init"]), max_steps=1)
    mp.spawn(_distributed_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert rank0["losses"] == rank1["losses"] and np.isfinite(rank0["losses"][0])
    initial = read_state_dict(assets["init"])
    changed = set()
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][key]), key
        if not torch.equal(value, initial[key]):
            changed.add(key)
    # the optimisation layer's backbone, pyramids, step-size and basis nets all moved (35 tensors), nothing else
    assert len(changed) > 30 and all(key.startswith("opt_layer.") for key in changed), sorted(changed)
    saved = read_state_dict(out / T.LAST_MODEL)
    assert all(torch.equal(saved[k], v) for k, v in rank0["state"].items())
    assert len((out / TRAIN_LOG).read_text().splitlines()) == 2  # header + one step, logged once
