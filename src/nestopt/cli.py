"""The ``nestopt`` command (also ``python -m nestopt``): list, show and run the registered experiments.

::

    nestopt list
    nestopt show NAME
    nestopt run NAME [--quick] [--seed S] [--out DIR] [--set KEY=VALUE ...]
    nestopt run all --quick
    nestopt --version

``run`` writes ``DIR/results.json``, ``DIR/report.md`` and the figures and prints the claims; ``run all``
writes one folder per experiment under ``DIR`` plus ``DIR/summary.md`` and ``DIR/summary.json``.

Exit status: 0 when every claim held (a documented finding, reported as such, does not count), 1 when a claim
failed, 2 for a usage error (one line on standard error that names the argument), 3 for an internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from nestopt import __version__, experiments
from nestopt.errors import InvalidArgumentError, NestoptError
from nestopt.experiments.registry import Experiment, check_seed, claims_table, prepare_out_dir, suggest
from nestopt.experiments.settings import parse_setting

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_CLAIM_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``nestopt: error: ...``) and exit with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"nestopt: error: {message} (see `{self.prog} --help`)\n")


class _UsageError(Exception):
    """A user error found after parsing; ``main`` prints it as one line and exits with status 2."""


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the seed must be an integer, got {text!r}") from None
    try:
        return check_seed(seed, argument="the seed")
    except InvalidArgumentError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _key_value(text: str) -> tuple[str, str]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expects KEY=VALUE, got {text!r}")
    return key.strip(), raw


def _experiment(name: str) -> Experiment:
    try:
        return experiments.get(name)
    except InvalidArgumentError as err:
        raise _UsageError(f"argument NAME: {err}") from None


def _cmd_list(_: argparse.Namespace) -> int:
    names = experiments.names()
    width = max(len(n) for n in names)
    for name in names:
        exp = experiments.get(name)
        print(f"{name:<{width}}  {exp.summary}")
        print(f"{'':<{width}}  ({exp.paper})")
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    exp = _experiment(args.name)
    print(exp.name)
    print(f"  claim:   {exp.summary}")
    print(f"  paper:   {exp.paper}")
    print(f"  figures: {', '.join(f'{f}.png' for f in exp.figures) or '(none)'}")
    for k in exp.known_failures:
        print(f"  known finding: claims named {k.prefix!r}... fail ({'both runs' if k.quick else 'full run'}; {k.why})")
    rows = [("setting", "type", "full (default)", "quick")]
    rows += [(key, kind, repr(full), repr(quick)) for key, kind, full, quick in exp.settings()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"\nsettings (change one with `nestopt run {exp.name} --set KEY=VALUE`):")
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
    return EXIT_OK


def _overrides(exp: Experiment, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    out = {}
    for key, raw in pairs:
        if key not in exp.full:
            raise _UsageError(
                f"argument --set: experiment {exp.name!r} has no setting {key!r}{suggest(key, exp.full)} "
                f"(`nestopt show {exp.name}` lists them)"
            )
        try:
            out[key] = parse_setting(key, raw, exp.full[key])
        except InvalidArgumentError as err:
            raise _UsageError(f"argument --set: {err}") from None
    return out


def _out_dirs(args: argparse.Namespace, names: list[str]) -> dict[str, Path]:
    base = Path(args.out) if args.out else Path("runs") / ("all" if args.name == "all" else args.name)
    folders = {name: base / name if args.name == "all" else base for name in names}
    try:
        prepare_out_dir(base, argument="argument --out:")
        for folder in folders.values():
            prepare_out_dir(folder, argument="argument --out:")
    except InvalidArgumentError as err:
        raise _UsageError(str(err)) from None
    return folders


def _cmd_run(args: argparse.Namespace) -> int:
    # every argument is checked before anything runs or prints
    if args.name == "all":
        if args.set:
            raise _UsageError("argument --set: applies to one experiment, not to `run all`")
        names, overrides = experiments.names(), {}
    else:
        names, overrides = [args.name], _overrides(_experiment(args.name), args.set or [])
    folders = _out_dirs(args, names)

    rows: list[tuple[str | None, dict[str, Any]]] = []
    summary = []
    for name in names:
        out = folders[name]
        print(f"== {name} ({'quick' if args.quick else 'full'}, seed {args.seed}) -> {out}", flush=True)
        result = experiments.run(name, quick=args.quick, seed=args.seed, out_dir=out, overrides=overrides)
        rows += [(name, c) for c in result["claims"]]
        summary.append({"experiment": name, "seconds": result["seconds"], "claims": result["claims"]})
        print(claims_table([(name, c) for c in result["claims"]]))
        if result["notes"]:
            print("\n" + result["notes"])
        print(f"   {result['seconds']:.1f} s; report: {out / 'report.md'}", flush=True)
    if args.name == "all":
        base = next(iter(folders.values())).parent
        (base / "summary.md").write_text(claims_table(rows) + "\n")
        (base / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print("\n" + claims_table(rows))
    known = [(n, c) for n, c in rows if not c["passed"] and c["known_failure"]]
    failed = [(n, c) for n, c in rows if not c["passed"] and not c["known_failure"]]
    if known:
        print(
            f"\n{len(known)} known finding(s), documented and not counted as failures: "
            + "; ".join(f"{n}: {c['name']} ({c['known_failure']})" for n, c in known),
            file=sys.stderr,
        )
    if failed:
        print(f"\n{len(failed)} claim(s) failed: " + "; ".join(f"{n}: {c['name']}" for n, c in failed), file=sys.stderr)
        return EXIT_CLAIM_FAILED
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nestopt",
        description="List, show and run the paper claims that nestopt reproduces.",
        epilog="exit status: 0 every claim held, 1 a claim failed, 2 usage error, 3 internal error",
    )
    parser.add_argument("--version", action="version", version=f"nestopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,show,run}")
    sub.add_parser("list", help="list the registered experiments").set_defaults(fn=_cmd_list)
    show = sub.add_parser("show", help="an experiment's claim, paper and settings (types, defaults, quick values)")
    show.add_argument("name", metavar="NAME", help="experiment name from `nestopt list`")
    show.set_defaults(fn=_cmd_show)
    run = sub.add_parser("run", help="run an experiment (or `all`) and check its claims")
    run.add_argument("name", metavar="NAME", help="experiment name from `nestopt list`, or `all`")
    run.add_argument("--quick", action="store_true", help="the small configuration the test suite uses")
    run.add_argument("--seed", type=_seed, default=0, help="base random seed in [0, 2**63 - 1] (default 0)")
    run.add_argument("--out", help="output folder (default runs/NAME)")
    run.add_argument(
        "--set",
        type=_key_value,
        action="append",
        metavar="KEY=VALUE",
        help="change a setting (`nestopt show NAME` lists them); the value must have the default's type",
    )
    run.set_defaults(fn=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except (_UsageError, NestoptError) as err:  # NestoptError: e.g. a missing optional dependency
        print(f"nestopt: error: {err}", file=sys.stderr)
    except Exception:  # a bug: keep the traceback, and keep exit status 1 for failed claims
        traceback.print_exc()
        print("nestopt: internal error (the traceback above); please report it", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
