"""Run every benchmark, one process each, and say which finished.

    python benchmarks/run_all.py [--quick] [--threads 1] [--out DIR] [--only NAME ...]

Each script writes ``NAME.json``, ``NAME.md`` and ``NAME.png`` into ``--out`` (default ``benchmarks/results``,
which ``docs/benchmarks.md`` shows; with ``--quick``, a smoke test, the ignored ``benchmarks/results/quick``,
so that it never overwrites the full-size results). A peer that is not installed gets a row that says so: run
``benchmarks/install_peers.py`` first (``make bench`` does both).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = ["hypergrad_speed", "accuracy_time", "scaling", "tuning", "optimizer_step", "curvature", "distributed"]
DOCS = HERE.parent / "docs" / "benchmarks.md"
RESULTS = HERE / "results"
INTRO = HERE / "docs_intro.md"


def write_docs(results: Path) -> None:
    """Rebuild docs/benchmarks.md: the fixed introduction, then every table and plot in ``results``."""
    parts = [INTRO.read_text().rstrip(), ""]
    for name in ["hypergrad_cost", *SCRIPTS]:
        table = results / f"{name}.md"
        if not table.exists():
            continue
        lines = table.read_text().rstrip().splitlines()
        title = lines[0].lstrip("# ") if lines[0].startswith("# ") else name
        body = lines[1:] if lines[0].startswith("# ") else lines
        parts += [
            f"## {title}",
            "",
            f"Made by `python benchmarks/{name}.py` (results in `benchmarks/results/{name}.*`).",
            "",
        ]
        parts += ["#" + line if line.startswith("## ") else line for line in body]
        if (results / f"{name}.png").exists():
            parts += ["", f"![{title}](../benchmarks/results/{name}.png)"]
        parts.append("")
    DOCS.parent.mkdir(exist_ok=True)
    DOCS.write_text("\n".join(parts).rstrip() + "\n")
    print(f"wrote {DOCS}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="output folder (default: each script's, benchmarks/results or its quick/)")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, default=SCRIPTS)
    parser.add_argument("--docs-only", action="store_true", help="only rebuild docs/benchmarks.md from --out")
    args = parser.parse_args()
    results = Path(args.out) if args.out else RESULTS
    if args.docs_only:
        write_docs(results)
        return 0
    status = {}
    for name in args.only:
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--threads", str(args.threads)]
        cmd += ["--out", args.out] if args.out else []
        cmd += ["--quick"] if args.quick else []
        print(f"\n### {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(cmd)
        status[name] = (code, time.perf_counter() - start)
    print("\n| benchmark | exit | seconds |\n|---|---:|---:|")
    for name, (code, seconds) in status.items():
        print(f"| {name} | {code} | {seconds:.0f} |")
    if not args.quick:
        write_docs(results)
    return max(code for code, _ in status.values())


if __name__ == "__main__":
    sys.exit(main())
