import json

import pytest

from nestopt import experiments


def test_quick_run_passes_every_claim(tmp_path):
    result = experiments.run("learned-augmentation", quick=True, out_dir=tmp_path)
    failed = [c for c in result["claims"] if not c["passed"]]
    assert not failed, failed
    m = json.loads((tmp_path / "results.json").read_text())["metrics"]
    # every run trained equally long: the same number of training steps
    steps = {r["inner_steps"] for r in m["per_seed"]}
    assert steps == {result["config"]["outer_steps"] * result["config"]["inner_steps_per_outer"]}
    assert m["hyperparameters"] > 0
    assert (tmp_path / "augmentation.png").stat().st_size > 10_000


@pytest.mark.slow
def test_full_run_passes_every_claim(tmp_path):
    result = experiments.run("learned-augmentation", out_dir=tmp_path)
    assert all(c["passed"] for c in result["claims"]), result["claims"]
