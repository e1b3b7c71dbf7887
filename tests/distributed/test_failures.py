"""A rank that fails must not hold the others: they end within the timeout, with an error naming it."""

from __future__ import annotations

import re
from pathlib import Path

from tests.distributed import launch

WORKER = Path(__file__).with_name("failing_worker.py")


def _failed_at(output: str) -> float:
    match = re.search(r"FAILING AT ([0-9.]+)", output)
    assert match, output[-3000:]
    return float(match.group(1))


def test_a_rank_that_raises_ends_the_others_at_once_with_an_error_naming_it():
    timeout = 20.0
    rank0, rank1 = launch.ranks(WORKER, "raise", str(timeout), nproc=2, timeout=120)
    cause = "RuntimeError: injected failure at outer step 3: the socket timed out"
    assert rank1.returncode not in (0, -9) and cause in rank1.output and "RankFailedError" not in rank1.output
    assert rank0.returncode not in (0, -9), rank0.output[-3000:]
    assert f"RankFailedError: rank 1 failed with {cause}" in rank0.output
    assert rank0.ended_at - _failed_at(rank1.output) < timeout  # measured: about a second


def test_a_rank_that_hangs_is_named_when_the_timeout_passes():
    timeout = 4.0
    rank0, rank1 = launch.ranks(WORKER, "hang", str(timeout), nproc=2, timeout=120, others=1.0)
    assert rank1.returncode == -9  # it was still hanging: killed by the test
    assert rank0.returncode not in (0, -9), rank0.output[-3000:]
    assert "RankFailedError: rank(s) [1] did not reach" in rank0.output
    waited = rank0.ended_at - _failed_at(rank1.output)
    assert timeout <= waited < timeout + 15, waited  # the timeout, a 2 s grace, and the exit
