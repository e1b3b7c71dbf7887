"""Shared plumbing of the benchmark scripts: command line, environment record, JSON/markdown/plot output."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import nestopt
from _measure import peak_memory
from _peers import peer_status

__all__ = ["QUICK_RESULTS", "RESULTS", "environment", "interleaved", "parser", "synchronizer", "timed", "write"]

RESULTS = Path(__file__).parent / "results"
QUICK_RESULTS = RESULTS / "quick"
"""Where ``--quick`` writes unless ``--out`` says otherwise (git ignores it): a smoke test never overwrites the
committed full-size results."""


class _Parser(argparse.ArgumentParser):
    """Fills in ``--out`` after parsing: :data:`QUICK_RESULTS` for ``--quick``, else :data:`RESULTS`."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        ns, extra = super().parse_known_args(args, namespace)
        if ns.out is None:
            ns.out = str(QUICK_RESULTS if ns.quick else RESULTS)
        return ns, extra


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark script takes."""
    p = _Parser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: a smoke test in seconds")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (the median is reported)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads, the same for every system")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where every system's tensors live")
    p.add_argument(
        "--out", help=f"output folder (default {RESULTS.relative_to(RESULTS.parents[1])}; with --quick, its quick/)"
    )
    return p


def environment(threads: int, device: str = "cpu") -> dict[str, Any]:
    """Fix the thread count and record what the numbers were measured with."""
    torch.set_num_threads(threads)
    peers = {}
    for name in ("torchopt", "betty", "higher", "optuna"):
        version, reason = peer_status(name)
        peers[name] = version if version else f"unavailable: {reason}"
    return {
        "torch": torch.__version__,
        "nestopt": nestopt.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_description(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else "cpu",
        "peers": peers,
    }


def cpu_description() -> str:
    """The CPU's model and its L2 and last-level cache sizes, as Linux reports them ("" where it does not).

    A memory-bound step's cost per pass depends on whether its buffers fit the cache (``optimizer_step.py``), so
    results measured on different machines can differ in their ratios, not only in their times.
    """
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    caches = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index[0-9]*")):
        try:
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind != "Instruction" and level in ("2", "3"):
            caches.append(f"L{level} {_kib(size)}")
    return ", ".join(t for t in (model, ", ".join(caches)) if t)


def _kib(size: str) -> str:
    """A cache size as sysfs writes it (``"2048K"``) in KiB or MiB."""
    if not size.endswith("K") or not size[:-1].isdigit():
        return size
    kib = int(size[:-1])
    return f"{kib // 1024} MiB" if kib % 1024 == 0 else f"{kib} KiB"


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """What makes a timer wait for the device: ``torch.cuda.synchronize`` on CUDA, nothing on the CPU."""
    dev = torch.device(device)
    return (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)


def timed(
    fn: Callable[[], Any], repeats: int, warmup: int = 1, memory: bool = True, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Median, min and max seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs, and its peak memory.

    The spread ``(max - min) / median`` is the noise the numbers carry on this machine. On CUDA every run is
    timed to the end of its kernels.
    """
    sync = synchronizer(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "seconds": median,
        "min_seconds": min(times),
        "max_seconds": max(times),
        "spread": (max(times) - min(times)) / median if median > 0 else 0.0,
        "repeats": repeats,
        "peak_bytes": peak_memory(fn, device) if memory else None,
    }


def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, budget: float = 10.0, device: str | torch.device = "cpu"
) -> dict[str, dict[str, Any]]:
    """Time several systems round-robin (one run of each per round), so that load changes hit all alike.

    Every closure runs once as a warm-up; the number of rounds drops (to at least 2) when one round takes
    more than ``budget / repeats`` seconds. Returns :func:`timed`-style rows, peak memory included.
    """
    sync = synchronizer(device)
    warm = {}
    for name, fn in fns.items():
        sync()
        start = time.perf_counter()
        fn()
        sync()
        warm[name] = time.perf_counter() - start
    rounds = (
        repeats
        if sum(warm.values()) * repeats <= budget * len(fns)
        else max(2, int(budget * len(fns) / sum(warm.values())))
    )
    rounds = min(rounds, repeats)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        out[name] = {
            "seconds": median,
            "min_seconds": min(ts),
            "max_seconds": max(ts),
            "spread": (max(ts) - min(ts)) / median if median > 0 else 0.0,
            "repeats": rounds,
            "peak_bytes": peak_memory(fns[name], device),
        }
    return out


def write(out: str | Path, name: str, result: dict[str, Any], markdown: list[str], fig: Any = None) -> Path:
    """Write ``name.json``, ``name.md`` and (given a figure) ``name.png`` into ``out``."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (path / f"{name}.md").write_text("\n".join(markdown) + "\n")
    if fig is not None:
        fig.savefig(path / f"{name}.png", dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
    print("\n".join(markdown))
    print(f"\nwrote {path / name}.json, .md" + (", .png" if fig is not None else ""))
    return path


def pyplot() -> Any:
    """matplotlib's pyplot with a non-interactive backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def env_line(env: dict[str, Any]) -> str:
    peers = ", ".join(f"{k} {v}" for k, v in env["peers"].items())
    where = f"{env['threads']} threads, {env['processor']}"
    if env.get("cpu"):
        where += f" ({env['cpu']})"
    if env.get("device", "cpu") != "cpu":
        where = f"{env['device']} (host: {where})"
    return f"torch {env['torch']}, nestopt {env['nestopt']}, {where}, python {env['python']}; peers: {peers}."
