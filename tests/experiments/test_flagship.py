import pytest

from nestopt import experiments


def test_quick_run_passes_every_claim(tmp_path):
    result = experiments.run("flagship", quick=True, out_dir=tmp_path)
    failed = [c for c in result["claims"] if not c["passed"]]
    assert not failed, failed
    table = result["metrics"]["table"]
    assert len(table) == 4 and {r["hyperparameters"] for r in table} == {1, result["metrics"]["hyperparameters"]}
    # the table is printed by `nestopt run` and written to the report
    assert "| run | hyperparameters |" in result["notes"]
    assert "| run | hyperparameters |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "flagship.png").stat().st_size > 10_000


@pytest.mark.slow
def test_full_run_passes_every_claim(tmp_path):
    result = experiments.run("flagship", out_dir=tmp_path)
    assert all(c["passed"] for c in result["claims"]), result["claims"]
