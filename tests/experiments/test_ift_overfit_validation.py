import json

import pytest

from nestopt import experiments


def test_quick_run_passes_every_claim(tmp_path):
    result = experiments.run("ift-overfit-validation", quick=True, out_dir=tmp_path)
    failed = [c for c in result["claims"] if not c["passed"]]
    assert not failed, failed
    saved = json.loads((tmp_path / "results.json").read_text())
    m = saved["metrics"]
    assert m["hyperparameters"] >= 100_000
    # the baseline is the best of the sweep: no global decay reached a lower validation loss anywhere
    assert m["best_global"]["val_loss"] == min(r["best_val_loss"] for r in m["global_sweep"])
    assert len(m["global_sweep"]) == len(saved["config"]["global_decays"])
    assert (tmp_path / "losses.png").stat().st_size > 10_000


@pytest.mark.slow
def test_full_run_passes_every_claim(tmp_path):
    result = experiments.run("ift-overfit-validation", out_dir=tmp_path)
    assert all(c["passed"] for c in result["claims"]), result["claims"]
