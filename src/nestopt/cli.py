"""The ``nestopt`` command: list and run the registered experiments.

::

    nestopt list
    nestopt run NAME [--quick] [--seed S] [--out DIR] [--set KEY=VALUE ...]
    nestopt run all --quick

``run`` writes ``DIR/results.json``, ``DIR/report.md`` and the figures, prints the claims, and exits with
status 1 when a claim fails. ``run all`` writes one folder per experiment under ``DIR`` plus
``DIR/summary.md``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any

from nestopt import experiments
from nestopt.errors import NestoptError
from nestopt.experiments.registry import claims_table

__all__ = ["main"]


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def _cmd_list(_: argparse.Namespace) -> int:
    width = max(len(n) for n in experiments.names())
    for name in experiments.names():
        exp = experiments.get(name)
        print(f"{name:<{width}}  {exp.summary}")
        print(f"{'':<{width}}  ({exp.paper})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    overrides = dict(args.set or [])
    targets = experiments.names() if args.name == "all" else [args.name]
    if args.name == "all" and overrides:
        raise NestoptError("--set applies to one experiment; it cannot be combined with `run all`")
    base = Path(args.out) if args.out else Path("runs") / ("all" if args.name == "all" else args.name)
    rows: list[tuple[str | None, dict[str, Any]]] = []
    summary = []
    for name in targets:
        out = base / name if args.name == "all" else base
        print(f"== {name} ({'quick' if args.quick else 'full'}, seed {args.seed}) -> {out}", flush=True)
        result = experiments.run(name, quick=args.quick, seed=args.seed, out_dir=out, overrides=overrides)
        rows += [(name, c) for c in result["claims"]]
        summary.append({"experiment": name, "seconds": result["seconds"], "claims": result["claims"]})
        print(claims_table([(name, c) for c in result["claims"]]))
        if result.get("notes"):
            print("\n" + result["notes"])
        print(f"   {result['seconds']:.1f} s; report: {out / 'report.md'}", flush=True)
    if args.name == "all":
        (base / "summary.md").write_text(claims_table(rows) + "\n")
        (base / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print("\n" + claims_table(rows))
    failed = [(n, c["name"]) for n, c in rows if not c["passed"]]
    if failed:
        print(f"\n{len(failed)} claim(s) failed: " + "; ".join(f"{n}: {c}" for n, c in failed), file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nestopt", description="Run the paper claims that nestopt reproduces.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered experiments").set_defaults(fn=_cmd_list)
    run = sub.add_parser("run", help="run an experiment (or `all`) and check its claims")
    run.add_argument("name", help="experiment name from `nestopt list`, or `all`")
    run.add_argument("--quick", action="store_true", help="the small configuration the test suite uses")
    run.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    run.add_argument("--out", help="output folder (default runs/NAME)")
    run.add_argument(
        "--set", type=_parse_override, action="append", metavar="KEY=VALUE", help="override a config setting"
    )
    run.set_defaults(fn=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except NestoptError as err:
        print(f"nestopt: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
