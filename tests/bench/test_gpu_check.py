"""The prepared GPU check: without CUDA it says so in one line and exits 2; its summary pieces."""

import torch

from bench import gpu_check


def test_without_cuda_it_stops_with_one_clear_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    summary = tmp_path / "summary.md"
    assert gpu_check.main(["--out", str(summary), "--quick"]) == 2
    output = capsys.readouterr().out.strip().splitlines()
    assert len(output) == 1 and "CUDA is not available" in output[0]
    assert not summary.exists()


def test_equivalence_is_skipped_with_a_note_without_reference_data():
    lines = gpu_check.check_equivalence(None)
    assert len(lines) == 1 and "skipped" in lines[0] and "--shared" in lines[0]


def test_the_reference_data_is_found_through_the_environment(monkeypatch, tmp_path):
    (tmp_path / gpu_check.REFERENCE_CASE).mkdir(parents=True)
    monkeypatch.setenv("DFNRMVS_SHARED", str(tmp_path))
    assert gpu_check._shared_dir(None) == tmp_path


def test_a_shared_folder_without_the_reference_data_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    (tmp_path / gpu_check.REFERENCE_CASE).mkdir(parents=True)
    monkeypatch.setenv("DFNRMVS_SHARED", str(tmp_path))  # no silent fallback to the environment's folder
    summary = tmp_path / "summary.md"
    assert gpu_check.main(["--shared", str(tmp_path / "elsewhere"), "--out", str(summary)]) == 2
    output = capsys.readouterr().out.strip().splitlines()
    assert len(output) == 1 and "elsewhere" in output[0] and "holds no" in output[0]
    assert not summary.exists()
