import json

import pytest

from nestopt import experiments


def test_quick_run_passes_every_claim(tmp_path):
    result = experiments.run("dataset-distillation", quick=True, out_dir=tmp_path)
    failed = [c for c in result["claims"] if not c["passed"]]
    assert not failed, failed
    m = json.loads((tmp_path / "results.json").read_text())["metrics"]
    assert len(m["per_seed"]) >= 3
    assert m["hyperparameters"] == 10 * 40  # one learned MNIST-1D signal per class
    # distillation lowered the loss on real data at every seed
    assert all(r["outer_loss_last"] < r["outer_loss_first"] for r in m["per_seed"])
    assert (tmp_path / "distilled.png").stat().st_size > 10_000


def test_same_seed_same_numbers(tmp_path):
    overrides = {"outer_steps": 5, "seeds": 2, "eval_inits": 1}
    a = experiments.run("dataset-distillation", quick=True, out_dir=tmp_path / "a", overrides=overrides)
    b = experiments.run("dataset-distillation", quick=True, out_dir=tmp_path / "b", overrides=overrides)
    assert a["metrics"]["per_seed"] == b["metrics"]["per_seed"]


@pytest.mark.slow
def test_full_run_passes_every_claim(tmp_path):
    result = experiments.run("dataset-distillation", out_dir=tmp_path)
    assert all(c["passed"] for c in result["claims"]), result["claims"]
