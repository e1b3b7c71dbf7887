"""Install the peer libraries the benchmarks compare with, never replacing the installed torch.

    python benchmarks/install_peers.py [--check]

* higher, TorchOpt (with optree and graphviz) and Optuna come from the ``bench`` extra of ``pyproject.toml``.
  They are installed with pip under a constraint that pins torch to the version already installed, so pip
  fails rather than swapping torch out.
* betty-ml 0.1.1 declares ``torch>=1.6.*`` and ``numpy>=1.9.*``, which pip 24.1 and later reject as invalid
  metadata, so no current pip installs it, even with ``--no-deps``. The wheel itself is pure Python and works
  with current torch. It is installed from PyPI by a pip older than 24.1, which accepts that metadata with a
  deprecation warning: that pip lives in a throwaway virtual environment and installs the wheel into this
  interpreter's environment (``pip --python``) with ``--no-deps``, so torch and numpy stay as they are.

Each peer ends as ``ok`` with its version or as ``FAILED`` with the reason; the benchmarks print the same
reason in the row of a peer they cannot import. ``--check`` only reports. The exit status is 0 even when
a peer fails: the benchmarks then run without it and say so.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import subprocess
import sys
import tempfile
from pathlib import Path

PEERS = {  # distribution -> (pinned requirement, module to import)
    "higher": ("higher==0.2.1", "higher"),
    "torchopt": ("torchopt==0.7.3", "torchopt"),
    "optree": ("optree", "optree"),
    "graphviz": ("graphviz", "graphviz"),
    "optuna": ("optuna", "optuna"),
    "betty-ml": ("betty-ml==0.1.1", "betty"),
}
OLD_PIP = "pip<24.1"  # the last pip series that accepts betty-ml's `torch>=1.6.*`


def installed(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def satisfied(requirement: str, dist: str) -> bool:
    version = installed(dist)
    if version is None:
        return False
    return "==" not in requirement or requirement.split("==")[1] == version


def run(cmd: list[str]) -> tuple[bool, str]:
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return proc.returncode == 0, " | ".join(tail)


def install_pip_peers(requirements: list[str], torch_version: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "keep-torch.txt"
        constraints.write_text(f"torch=={torch_version}\n")
        ok, tail = run([sys.executable, "-m", "pip", "install", "--quiet", "-c", str(constraints), *requirements])
    return "" if ok else tail


def install_betty() -> str:
    """Install betty-ml 0.1.1 from PyPI with an older pip; return '' or the reason it failed."""
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "old-pip"
        ok, tail = run([sys.executable, "-m", "venv", str(venv)])
        if not ok:
            return f"could not create a throwaway venv: {tail}"
        old_python = venv / "bin" / "python"
        ok, tail = run([str(old_python), "-m", "pip", "install", "--quiet", OLD_PIP])
        if not ok:
            return f"could not install {OLD_PIP} in a throwaway venv: {tail}"
        ok, tail = run(
            [str(old_python), "-m", "pip", "--python", sys.executable, "install", "--no-deps", "betty-ml==0.1.1"]
        )
        if not ok:
            return f"pip ({OLD_PIP}) could not install betty-ml==0.1.1: {tail}"
    return ""


def importable(module: str) -> str:
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    if proc.returncode == 0:
        return ""
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"import {module} failed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report what is installed")
    args = parser.parse_args()
    torch_version = installed("torch")
    if torch_version is None:
        print("torch is not installed in this environment: install nestopt first (make venv)")
        return 1
    failures: dict[str, str] = {}
    if not args.check:
        missing = [req for dist, (req, _) in PEERS.items() if dist != "betty-ml" and not satisfied(req, dist)]
        if missing:
            reason = install_pip_peers(missing, torch_version)
            for req in missing:
                failures[req.split("==")[0]] = reason
        if not satisfied("betty-ml==0.1.1", "betty-ml"):
            failures["betty-ml"] = install_betty()
    if installed("torch") != torch_version:
        print(f"torch changed from {torch_version} to {installed('torch')}: this must not happen")
        return 1
    print(f"\ntorch {torch_version} (unchanged)")
    for dist, (req, module) in PEERS.items():
        version = installed(dist)
        problem = importable(module) if version else (failures.get(dist) or "not installed")
        if version and not problem and satisfied(req, dist):
            print(f"  ok      {dist} {version}")
        else:
            why = problem or f"version {version} installed, {req} wanted"
            print(f"  FAILED  {dist}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
