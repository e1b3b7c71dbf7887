"""Which curvature for implicit hypergradients of networks: the exact Hessian or the Gauss-Newton matrix.

Two questions, on this machine, one thread:

1. **Negative curvature in training.** ``BilevelTrainer`` with one weight decay per weight, 30 outer steps of
   10 SGD steps, the hypergradient by 20 iterations of CG with several dampings, on an MLP (MNIST-1D) and on
   a CNN with BatchNorm and Dropout (scikit-learn digits): how many outer steps end in
   ``negative_curvature``, with the exact Hessian and with the Gauss-Newton matrix.
2. **Accuracy.** On a small MLP whose Hessian can be formed (1.6k weights), trained 300 steps: the cosine
   between the exact IFT hypergradient (a dense solve with the exact Hessian) and the hypergradients of
   CG-20 on each curvature, and of a dense solve with the Gauss-Newton matrix (the approximation alone), at a
   small (indefinite Hessian) and a large (positive definite) weight decay. `--quick` is a smoke test: one
   damping per curvature, 4 outer steps, a 40-8-10 MLP.

    python benchmarks/curvature.py [--quick] [--threads 1] [--out benchmarks/results]
"""

from __future__ import annotations

import collections
import functools
import warnings
from typing import Any

import torch

import nestopt
from _report import env_line, environment, parser, write
from nestopt import autodiff, data, hparams, hypergrad, linalg, tree

CE = torch.nn.functional.cross_entropy


def _task(kind: str, quick: bool) -> tuple[data.Splits, torch.nn.Module]:
    torch.manual_seed(0)
    n = 300 if quick else 1000
    if kind == "mlp":
        d = data.mnist1d(n, 300, 300, seed=0)
        net = torch.nn.Sequential(torch.nn.Linear(40, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
                                  torch.nn.Linear(128, 10))  # fmt: skip
        return d, net
    d = data.digits(n, 300, 300, seed=0)
    d = data.Splits(*(data.Split(s.x.reshape(-1, 1, 8, 8), s.y) for s in (d.train, d.val, d.test)), d.num_classes)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.Dropout(0.2),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(16 * 64, 10),
    )  # fmt: skip
    return d, net


def training_statuses(kind: str, curvature: str, damping: float, steps: int, quick: bool) -> dict[str, Any]:
    d, net = _task(kind, quick)
    trainer = nestopt.BilevelTrainer(
        net, CE, [hparams.WeightDecay(net, init=1e-4)],
        hypergrad=hypergrad.Implicit(solver=linalg.CG(steps=20, damping=damping), curvature=curvature),
        inner_optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9), inner_steps_per_outer=10,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = trainer.fit(data.Loader(d.train, 64), data.Loader(d.val, 100), outer_steps=steps, eval_every=steps,
                              progress=False)  # fmt: skip
    statuses = collections.Counter(history.column("status"))
    return {
        "system": "nestopt", "status": "ok", "question": "training", "network": kind, "curvature": curvature,
        "damping": damping, "outer_steps": steps, "negative_curvature": statuses.get("negative_curvature", 0),
        "statuses": dict(statuses), "val_loss": history.last("val_loss"),
    }  # fmt: skip


def _cos(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(tree.dot(a, b) / (tree.norm(a) * tree.norm(b)))


def _hessian_spectrum_ends(loss: Any, w: dict[str, torch.Tensor], h: Any, batch: Any) -> tuple[float, float]:
    """The smallest and largest eigenvalue of the inner loss's dense Hessian at ``w``."""
    flat, spec = tree.flatten(w)
    eig = torch.linalg.eigvalsh(torch.func.hessian(lambda v: loss(tree.unflatten(v, spec), h, batch))(flat))
    return float(eig[0]), float(eig[-1])


def accuracy(quick: bool, decay: float) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    d = data.mnist1d(500, 300, 100, seed=1)
    hidden = 8 if quick else 32
    net = torch.nn.Sequential(torch.nn.Linear(40, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 10)).double()
    obj = hparams.Objective(net, CE, [hparams.WeightDecay(net, init=decay)])
    h = obj.init_hparams()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    train = (d.train.x.double(), d.train.y)
    for _ in range(60 if quick else 300):
        opt.zero_grad()
        obj.inner_loss(obj.params(), h, train).backward()
        opt.step()
    w, val = tree.detach(obj.params()), (d.val.x.double(), d.val.y)
    lo, hi = _hessian_spectrum_ends(obj.inner_loss, w, h, train)
    _, grad = autodiff.grad(obj.inner_loss, w, h, train)
    setting = {"decay": decay, "hessian_min_eig": lo, "hessian_max_eig": hi,
               "inner_grad_norm": float(tree.norm(grad))}  # fmt: skip
    args = (obj.inner_loss, obj.outer_loss, w, h, train, val)
    exact = hypergrad.implicit(*args, solver=linalg.Exact(), seed=0)
    rows = [{"method": "exact Hessian, dense solve", "cosine": 1.0, "solve_status": exact.info.status.value}]
    for name, solver, curvature in [
        ("Gauss-Newton, dense solve", linalg.Exact(), "gauss-newton"),
        ("Hessian, CG-20, damping 0.1", linalg.CG(steps=20, damping=0.1), "hessian"),
        ("Gauss-Newton, CG-20, damping 0.1 (the trainer's default)", linalg.CG(steps=20, damping=0.1), "gauss-newton"),
        ("Gauss-Newton, CG-20, damping 0.01", linalg.CG(steps=20, damping=0.01), "gauss-newton"),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = hypergrad.implicit(*args, solver=solver, curvature=curvature, seed=0)
        rows.append({"method": name, "cosine": _cos(res.grads, exact.grads), "solve_status": res.info.status.value})
    return [{"system": "nestopt", "status": "ok", "question": "accuracy", **setting, **r} for r in rows]


def main() -> None:
    args = parser(__doc__).parse_args()
    env = environment(args.threads)
    steps = 4 if args.quick else 30
    runs = []
    for kind in ("mlp", "cnn"):
        grid = (("hessian", (0.0, 0.01, 0.1, 1.0)), ("gauss-newton", (1e-3, 1e-2, 0.1)))
        for curvature, dampings in ((c, d[-1:]) for c, d in grid) if args.quick else grid:  # quick: a smoke test
            for damping in dampings:
                runs.append(training_statuses(kind, curvature, damping, steps, args.quick))
                print(runs[-1], flush=True)
    acc = [row for decay in (1e-3, 1e-1) for row in accuracy(args.quick, decay)]
    md = [
        "# Curvature for implicit hypergradients: Hessian or Gauss-Newton",
        "",
        env_line(env),
        "",
        f"Outer steps (of {steps}) whose CG-20 solve ended in negative curvature, one decay per weight:",
        "",
        "| network | curvature | damping | negative curvature | final validation loss |",
        "|---|---|---|---|---|",
    ]
    md += [
        f"| {r['network']} | {r['curvature']} | {r['damping']:g} | {r['negative_curvature']} of {r['outer_steps']} "
        f"| {r['val_loss']:.3f} |"
        for r in runs
    ]
    md += ["", "Agreement with the exact IFT hypergradient (MLP 40-32-10, tanh, float64, dense Hessian, after 300 Adam "
           "steps; --quick: 40-8-10 after 60), for a small and a large weight decay per weight:", "",
           "| decay | Hessian eigenvalues (min, max) | inner gradient norm | method | cosine | status |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    md += [
        f"| {r['decay']:g} | {r['hessian_min_eig']:.2e}, {r['hessian_max_eig']:.2f} | {r['inner_grad_norm']:.1e} "
        f"| {r['method']} | {r['cosine']:.4f} | {r['solve_status']} |"
        for r in acc
    ]
    write(args.out, "curvature", {"benchmark": "curvature", "environment": env, "rows": runs + acc}, md)


if __name__ == "__main__":
    main()
