"""Checkpoints: exact resume after a hard kill, and loading that never runs code from the file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nestopt
from nestopt import hparams
from nestopt.bilevel import checkpoint
from nestopt.errors import CheckpointError
from tests.bilevel.conftest import loaders, regularized_net, task

SCRIPT = Path(__file__).with_name("resumable_run.py")
ROOT = Path(__file__).resolve().parents[2]


def _command(ckpt: Path, out: Path) -> list[str]:
    return [sys.executable, str(SCRIPT), "--checkpoint", str(ckpt), "--out", str(out)]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def test_a_run_killed_with_sigkill_resumes_bit_identically(tmp_path):
    straight = tmp_path / "straight.pt"
    subprocess.run(_command(tmp_path / "a.pt", straight), check=True, timeout=300, env=_env(), capture_output=True)

    kill_at = random.Random(7).randint(2, 10)  # a random outer step of the 12
    proc = subprocess.Popen(_command(tmp_path / "b.pt", tmp_path / "never.pt"), stdout=subprocess.PIPE, text=True,
                            env=_env())  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == f"step {kill_at}":
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "never.pt").exists()
    resumed = tmp_path / "resumed.pt"
    subprocess.run(_command(tmp_path / "b.pt", resumed), check=True, timeout=300, env=_env(), capture_output=True)

    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert set(a) == set(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


class _Payload:
    """Unpickling this would create a file: a checkpoint must never run code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"kind": "nestopt.BilevelTrainer", "format": checkpoint.FORMAT, "params": _Payload(marker)}, path)
    assert not marker.exists()  # writing it ran nothing
    net = regularized_net()
    trainer = nestopt.BilevelTrainer(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net)])
    with pytest.raises(CheckpointError, match="not loaded"):
        trainer.load_checkpoint(path)
    assert not marker.exists()
    # the same file through torch.load without weights_only would have run the payload
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_other_files_are_refused_with_a_clear_error(tmp_path):
    net = regularized_net()
    trainer = nestopt.BilevelTrainer(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net)])
    torch.save(net.state_dict(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="is not a nestopt.BilevelTrainer checkpoint"):
        trainer.load_checkpoint(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        trainer.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        trainer.load_checkpoint(tmp_path / "junk.pt")
    checkpoint.save(tmp_path / "old.pt", {"kind": "nestopt.BilevelTrainer"})
    state = torch.load(tmp_path / "old.pt", weights_only=True)
    torch.save({**state, "format": 1}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="format 1"):
        trainer.load_checkpoint(tmp_path / "old.pt")


def test_checkpoints_hold_buffers_schedulers_and_strategy_state(tmp_path):
    d, net = task(), regularized_net()
    trainer = nestopt.BilevelTrainer(
        net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net)],
        hypergrad=nestopt.hypergrad.Unrolled(optimizer=nestopt.optim.functional.sgd(lr=0.1, momentum=0.9), steps=3),
        outer_scheduler=lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5),
    )  # fmt: skip
    trainer.fit(*loaders(d)[:2], outer_steps=2, checkpoint=tmp_path / "c.pt", progress=False)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert torch.equal(state["buffers"]["1.running_mean"], net[1].running_mean)
    assert state["outer_sched"]["last_epoch"] == 2 and trainer.outer_opt.param_groups[0]["lr"] == pytest.approx(0.0025)
    assert set(state["strategy"]["opt_state"][0]["momentum_buffer"]) == set(trainer.params)  # the unroll's momentum
