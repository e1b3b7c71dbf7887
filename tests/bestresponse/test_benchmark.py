"""benchmarks/best_response_cost.py runs end to end in its --quick mode and writes every row."""

from __future__ import annotations

import json
import runpy
import sys

from tests.benchmarks.conftest import BENCHMARKS


def test_best_response_cost_quick(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["best_response_cost.py", "--quick", "--out", str(tmp_path)])
    runpy.run_path(str(BENCHMARKS / "best_response_cost.py"), run_name="__main__")
    result = json.loads((tmp_path / "best_response_cost.json").read_text())
    names = {"plain training step", "STN training step", "STN validation step", "Delta-STN training step", "hypernetwork step"}
    assert set(result["rows"]) == names
    assert all(r["seconds"] > 0 and r["peak_bytes"] > 0 for r in result["rows"].values())
    assert (tmp_path / "best_response_cost.md").read_text().startswith("# ")
