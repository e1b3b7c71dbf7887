"""``benchmarks/distributed.py --quick`` launches 1 and 2 processes and writes its table (slow: two launches)."""

from __future__ import annotations

import json
import runpy
import sys

import pytest

from tests.benchmarks.conftest import BENCHMARKS


@pytest.mark.slow
def test_the_distributed_benchmark_measures_one_and_two_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["distributed.py", "--quick", "--out", str(tmp_path)])
    monkeypatch.setenv("PYTHONPATH", str(BENCHMARKS.parent / "src"))
    runpy.run_path(str(BENCHMARKS / "distributed.py"), run_name="__main__")
    result = json.loads((tmp_path / "distributed.json").read_text())
    rows = {(r["ranks"], r["mode"]): r for r in result["rows"]}
    assert set(rows) == {(1, "exact"), (2, "exact"), (2, "local")}
    k = rows[(2, "exact")]["steps"]
    assert rows[(2, "exact")]["collectives"] == k + 2 and rows[(2, "local")]["collectives"] == 1
    assert rows[(1, "exact")]["collectives"] == 0
    assert result["fit"]["bandwidth_Bps"] > 0 and {p["ranks"] for p in result["projections"]} == {8, 64}
