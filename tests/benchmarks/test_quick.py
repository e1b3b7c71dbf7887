"""Every benchmark script runs end to end in its --quick mode and writes its JSON, table and plot into the
ignored scratch folder ``benchmarks/results/quick``, leaving the committed full-size results untouched."""

from __future__ import annotations

import hashlib
import json
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

import _report
from run_all import SCRIPTS
from tests.benchmarks.conftest import BENCHMARKS


def _snapshot(folder: Path) -> dict[str, str]:
    """The committed results: every file directly in ``folder`` and its hash."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("name", [s for s in SCRIPTS if s != "distributed"])  # it has its own (slow) test
def test_quick_mode_writes_results_to_the_scratch_folder(name: str, monkeypatch: Any) -> None:
    before = _snapshot(_report.RESULTS)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--quick"])
    runpy.run_path(str(BENCHMARKS / f"{name}.py"), run_name="__main__")
    assert _snapshot(_report.RESULTS) == before, "a --quick run changed benchmarks/results/"
    out = _report.QUICK_RESULTS
    result = json.loads((out / f"{name}.json").read_text())
    assert result["benchmark"] == name
    assert (out / f"{name}.md").read_text().startswith("# ")
    rows = result.get("rows") or list(result.get("results", {}).values())
    assert rows, "no rows"
    # every row either ran or says why not: no silent omission
    for row in rows:
        assert row["status"] == "ok" or row["status"].startswith(("unavailable", "failed", "{"))
    ok = [r for r in rows if r["status"] == "ok" and r.get("system", "nestopt") == "nestopt"]
    assert ok, "nestopt itself did not run"


def test_explicit_out_wins_over_the_scratch_folder(tmp_path: Path) -> None:
    args = _report.parser("doc").parse_args(["--quick", "--out", str(tmp_path)])
    assert args.out == str(tmp_path)
    assert _report.parser("doc").parse_args([]).out == str(_report.RESULTS)


def test_run_all_quick_leaves_results_and_docs_alone(monkeypatch: Any) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr("subprocess.call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--quick"])
    docs = (BENCHMARKS.parent / "docs" / "benchmarks.md").read_text()
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(BENCHMARKS / "run_all.py"), run_name="__main__")
    assert stop.value.code == 0
    assert [Path(c[1]).stem for c in calls] == SCRIPTS
    assert all("--quick" in c and "--out" not in c for c in calls)  # each script's quick default: the scratch folder
    assert (BENCHMARKS.parent / "docs" / "benchmarks.md").read_text() == docs


def test_joint_cost_breakdown_lists_what_is_alive_at_each_peak(monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setattr(sys, "argv", ["joint_cost.py", "--quick", "--breakdown"])
    runpy.run_path(str(BENCHMARKS / "joint_cost.py"), run_name="__main__")
    out = capsys.readouterr().out
    peaks = {}
    for block in out.strip().split("\n\n"):
        head, *lines = block.strip().splitlines()
        name = head.split(":")[0]
        peaks[name] = float(head.split("peak ")[1].split()[0])
        assert lines[0].split()[1] == "counted"  # the network and the data: the largest single origin
        assert sum(float(line.split()[0]) for line in lines) <= peaks[name] + 0.02
    assert set(peaks) == {"plain", "layer", "parameter"}
    assert peaks["plain"] < peaks["layer"] < peaks["parameter"]
