"""torch.compile and bf16 autocast on the pieces of joint training: do they pay?

The flagship's MLP 40-300-300-10 (105,610 weights, one decay per weight), batch 128, on ``--device``:

* the inner training step (forward, backward, Adam step): eager against ``torch.compile`` of the network;
* one Hessian-vector product at a linearized point: nestopt's default (reverse over reverse, the gradient's
  graph built once and reused) against ``torch.compile`` of a forward-over-reverse product
  (``torch.func.jvp`` of ``torch.func.grad``, the only form ``torch.compile`` traces: it does not trace the
  double backward of a retained graph);
* a Neumann-5 hypergradient with the forward passes under bf16 autocast (the solver's arithmetic stays in
  float32): time, and cosine with the float32 hypergradient.

Each row is timed round-robin against its eager twin in the same process; ``first call`` includes the
compilation. What wins is kept only where it wins (the library's defaults stay eager and float32 when a
row loses), and the table says which.

    python benchmarks/compile_precision.py [--quick] [--device cuda] [--repeats 20]
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from _report import env_line, environment, interleaved, parser, synchronizer, write
from nestopt import autodiff, data, hparams, hypergrad, linalg, tree
from nestopt.experiments._common import CE
from nestopt.hparams import Objective
from nestopt.nets import mlp


def _problem(hidden: list[int], device: str) -> dict[str, Any]:
    d = data.mnist1d(512, 128, 10, seed=0)
    net = mlp([40, *hidden, 10], "relu", generator=torch.Generator().manual_seed(1)).to(device)
    objective = Objective(net, CE, [hparams.WeightDecay(net, per="parameter", init=1e-3)])
    h = {k: v.requires_grad_(True) for k, v in objective.init_hparams().items()}
    train = (d.train.x[:128].to(device), d.train.y[:128].to(device))
    val = (d.val.x.to(device), d.val.y.to(device))
    return {"net": net, "objective": objective, "hparams": h, "train": train, "val": val}


def _first_call(fn: Callable[[], Any], device: str) -> float:
    sync = synchronizer(device)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def training_steps(p: dict[str, Any], device: str) -> dict[str, Callable[[], Any]]:
    obj, h = p["objective"], tree.detach(p["hparams"])
    compiled_net = torch.compile(p["net"])
    params = obj.params()
    opt = torch.optim.Adam(list(params.values()), lr=1e-3)
    x, y = p["train"]

    def eager() -> None:
        loss = obj.inner_loss(params, h, p["train"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def compiled() -> None:
        loss = CE(compiled_net(x), y) + obj.penalty(params, h)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return {"eager": eager, "torch.compile": compiled}


def hvps(p: dict[str, Any], device: str) -> dict[str, Callable[[], Any]]:
    obj, h = p["objective"], p["hparams"]
    w = tree.clone(tree.detach(obj.params()))
    lin = autodiff.linearize(obj.inner_loss, w, h, p["train"], seed=0)
    v = tree.clone(lin.grad)
    hd = tree.detach(h)
    grad_fn = torch.func.grad(lambda w_: obj.inner_loss(w_, hd, p["train"]))
    fwd_rev = lambda: torch.func.jvp(grad_fn, (w,), (v,))[1]
    compiled = torch.compile(lambda w_, v_: torch.func.jvp(grad_fn, (w_,), (v_,))[1])
    return {"eager": lambda: lin.hvp(v), "fwd-rev": fwd_rev, "torch.compile": lambda: compiled(w, v)}


def autocast_hypergradients(p: dict[str, Any], device: str) -> tuple[dict[str, Callable[[], Any]], float]:
    obj, h = p["objective"], p["hparams"]
    w = tree.clone(tree.detach(obj.params()))
    solver = linalg.Neumann(steps=5, alpha="auto")
    args = (obj.inner_loss, obj.outer_loss, w, h, p["train"], p["val"])
    dev = torch.device(device).type

    def fp32() -> Any:
        return hypergrad.implicit(*args, solver=solver, seed=0).grads

    def bf16() -> Any:
        with torch.autocast(dev, dtype=torch.bfloat16):
            return hypergrad.implicit(*args, solver=solver, seed=0).grads

    a, b = fp32(), bf16()
    cos = float(tree.dot(a, b) / (tree.norm(a) * tree.norm(b)))
    return {"eager": fp32, "bf16 autocast": bf16}, cos


def main() -> None:
    ap = parser(__doc__)
    ap.set_defaults(repeats=20)
    args = ap.parse_args()
    env = environment(args.threads, args.device)
    hidden = [32, 32] if args.quick else [300, 300]
    repeats = 2 if args.quick else args.repeats
    p = _problem(hidden, args.device)
    rows: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups: list[tuple[str, dict[str, Callable[[], Any]], dict[str, Any]]] = [
            ("training step", training_steps(p, args.device), {}),
            ("Hessian-vector product", hvps(p, args.device), {}),
        ]
        fns, cos = autocast_hypergradients(p, args.device)
        groups.append(("Neumann-5 hypergradient", fns, {"bf16 autocast": cos}))
        for group, fns, cosines in groups:
            first = {}
            if args.quick:  # a compilation takes about a minute on one CPU thread: not in a smoke test
                for name in [n for n in fns if n == "torch.compile"]:
                    del fns[name]
                    rows.append({"group": group, "variant": name, "status": "unavailable: not compiled with --quick"})
            for name, fn in fns.items():
                try:
                    first[name] = _first_call(fn, args.device)
                except Exception as err:  # a variant that does not run is a finding: reported, not fatal
                    rows.append({"group": group, "variant": name, "status": f"failed: {type(err).__name__}: {err}"})
            ok = {n: f for n, f in fns.items() if n in first}
            timed = interleaved(ok, repeats, device=args.device)
            base = timed["eager"]["seconds"]
            for name, t in timed.items():
                row = {"group": group, "variant": name, "status": "ok", "first_call": first[name], **t,
                       "vs_eager": t["seconds"] / base}  # fmt: skip
                if name in cosines:
                    row["cosine"] = cosines[name]
                rows.append(row)
    for r in rows:
        r["wins"] = r.get("status") == "ok" and r["variant"] != "eager" and r["vs_eager"] < 0.95
    cmd = "python benchmarks/compile_precision.py" + (" --quick" if args.quick else f" --repeats {args.repeats}")
    cmd += f" --device {args.device}" if args.device != "cpu" else ""
    lines = [
        "# torch.compile and bf16 autocast",
        "",
        f"`{cmd}`. MLP 40-{'-'.join(map(str, hidden))}-10, one decay per weight, batch 128, {env['device']}. "
        f"{env_line(env)}",
        "",
        "Time: median of round-robin repeats against the eager row of the group; first call includes compilation. "
        "A variant wins below 0.95 of eager.",
        "",
        "| piece | variant | time (ms) | spread | x eager | first call (s) | cosine with float32 | wins |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['group']} | {r['variant']} | | | | | | {r['status']} |")
            continue
        cos = f"{r['cosine']:.5f}" if "cosine" in r else ""
        lines.append(
            f"| {r['group']} | {r['variant']} | {r['seconds'] * 1e3:.2f} | {r['spread']:.0%} | {r['vs_eager']:.2f} | "
            f"{r['first_call']:.2f} | {cos} | {'yes' if r['wins'] else 'no'} |"
        )
    name = "compile_precision" if args.device == "cpu" else f"compile_precision_{torch.device(args.device).type}"
    write(args.out, name, {"benchmark": "compile_precision", "environment": env, "command": cmd, "rows": rows}, lines)


if __name__ == "__main__":
    main()
