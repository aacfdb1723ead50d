"""The training benchmark's step timing runs (a smoke test of the script: it must import and step both stages)."""

import json

from bench import benchmark_training


def test_timing_steps_both_stages_of_the_compact_network(capsys):
    argv = ["timing", "--face", "reference", "--network", "compact", "--repeats", "1", "--json"]
    assert benchmark_training.main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [row["stage"] for row in rows] == ["regressor", "optimizer"]
    assert all(row["vertices"] == 3600 and row["network"] == "compact" for row in rows)
    assert all(0 < row["min_s"] <= row["median_s"] <= row["max_s"] for row in rows)
    assert rows[1]["median_s"] > rows[0]["median_s"]  # stage 2 backpropagates through the unrolled optimisation
