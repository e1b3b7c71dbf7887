"""``examples/distributed_bilevel.py`` runs as documented, under torchrun on 2 ranks (slow: one launch)."""

from __future__ import annotations

import pytest

from tests.distributed import launch

EXAMPLE = launch.ROOT / "examples" / "distributed_bilevel.py"


@pytest.mark.slow
@pytest.mark.parametrize("options", [[], ["--mode", "local", "--no-ddp"]])
def test_the_example_runs_on_two_ranks(options, tmp_path):
    args = ["--outer-steps", "10", "--checkpoint", str(tmp_path / "run.pt"), *options]
    ended = launch.torchrun(EXAMPLE, *args, nproc=2, timeout=300)
    assert ended.returncode == 0, ended.output[-4000:]
    assert "2 process(es), backend gloo" in ended.output
    assert "identical on every rank: True" in ended.output
    assert (tmp_path / "run.pt").exists()
