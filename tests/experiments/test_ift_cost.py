import json

import pytest

from nestopt import experiments

# A finding, not a bug: with one decay per weight the hyperparameters, their Adam state and the hypergradient
# are each as large as the network, and the Hessian-vector products' temporaries add more (docs/ift.md).
KNOWN = "peak memory: joint / plain, decay per weight"


def _check(result):
    failed = [c for c in result["claims"] if not c["passed"]]
    unexpected = [c for c in failed if not c["name"].startswith(KNOWN)]
    assert not unexpected, unexpected
    return failed


def test_quick_run(tmp_path):
    result = experiments.run("ift-cost", quick=True, out_dir=tmp_path)
    failed = _check(result)
    m = json.loads((tmp_path / "results.json").read_text())["metrics"]
    assert m["hyperparameters"] == {"layer": 6, "parameter": m["weights"]}
    # every run counts the same network and data set, and allocates more than nothing
    peaks = m["peak_bytes"]
    assert len({p["baseline"] for p in peaks.values()}) == 1
    assert all(p["extra"] > 0 and p["total"] == p["baseline"] + p["extra"] for p in peaks.values())
    # more hyperparameters, more memory
    assert peaks["parameter"]["total"] > peaks["layer"]["total"] > peaks["plain"]["total"]
    assert (tmp_path / "cost.png").stat().st_size > 10_000
    if failed:
        pytest.xfail(f"known finding: {[(c['name'], c['value']) for c in failed]}")


@pytest.mark.slow
def test_full_run(tmp_path):
    failed = _check(experiments.run("ift-cost", out_dir=tmp_path))
    if failed:
        pytest.xfail(f"known finding: {[(c['name'], c['value']) for c in failed]}")
