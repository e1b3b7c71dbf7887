"""Launch test scripts on several ranks, always with a timeout, killing every process they started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


@dataclass
class Ended:
    returncode: int
    output: str
    ended_at: float


def _wait(proc: subprocess.Popen[str], timeout: float) -> Ended:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{proc.args} did not end within {timeout} s; its output:\n{out[-4000:]}") from None
    return Ended(proc.returncode, out, time.time())


def _popen(args: list[str], environment: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(args, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip


def torchrun(script: Path, *args: str, nproc: int, timeout: float) -> Ended:
    """``python -m torch.distributed.run --standalone --nproc_per_node=nproc script args``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    return _wait(_popen([*cmd, *args], env()), timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ranks(script: Path, *args: str, nproc: int, timeout: float, others: float = 10.0) -> list[Ended]:
    """Each rank as its own ``python script args`` process with torchrun's environment variables. Waits up to
    ``timeout`` for rank 0, then up to ``others`` seconds for the rest; any still running is killed (-9)."""
    port = str(free_port())
    procs = [
        _popen([sys.executable, str(script), *args],
               env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE=str(nproc), RANK=str(r), LOCAL_RANK=str(r)))
        for r in range(nproc)
    ]  # fmt: skip
    ended = []
    for i, proc in enumerate(procs):
        try:
            ended.append(_wait(proc, timeout if i == 0 else others))
        except AssertionError as err:
            ended.append(Ended(-9, str(err), time.time()))
    return ended
