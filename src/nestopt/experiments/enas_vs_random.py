"""ENAS against random search with weight sharing at the same budget, scored on a computed ground truth.

The space is ENAS's cell space (:class:`nestopt.nas.CellSpace`: 5 nodes, activations tanh / ReLU / sigmoid /
identity, 24,576 cells) as small MLP cells on MNIST-1D. Both methods train one weight-sharing supernet for the
same number of steps (20 epochs of 100 in the full run, each step through one sampled child), then pick the
best of 100 sampled candidates by shared-weight validation accuracy: random search samples uniformly
throughout (Li & Talwalkar, 2019), ENAS from an LSTM controller trained by REINFORCE on the children's
validation accuracy (Pham et al., 2018). Each pick is scored by the **ground truth**: its test accuracy
after training from scratch (:class:`nestopt.nas.GroundTruth`, cached in the run folder). A uniform sample
of the space (200 in the full run) is scored too, to place the picks, to measure how well the shared weights
rank architectures, and, retrained with another seed, to measure the ground truth's own reproducibility.

Claim (Adam & Lorraine, 2019, and Li & Talwalkar, 2019): ENAS does no better than random search with weight
sharing: their best-of-100 ground-truth accuracies are within one standard deviation over 5 seeds.
"""

from __future__ import annotations

from typing import Any

from nestopt import _rng, nas
from nestopt.experiments._nas_common import (
    ENAS_KEYS,
    NAS_PAPER,
    SEARCH_KEYS,
    SPACE_KEYS,
    TRUTH_KEYS,
    enas_config,
    ground_truth,
    mean_sd,
    percentile,
    sample,
    setup,
    shared_training,
    truth_summary,
)
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.profile import threads

__all__: list[str] = []

FULL = {**SPACE_KEYS, **TRUTH_KEYS, **SEARCH_KEYS, **ENAS_KEYS, "seeds": 5, "gt_sample": 200, "gt_repeats": 20}
QUICK = {
    "nodes": 4, "n_train": 1000, "n_val": 500, "n_test": 500, "gt_steps": 300, "gt_batch_size": 64, "gt_lr": 1e-2,
    "width": 16, "epochs": 4, "steps_per_epoch": 40, "batch_size": 64, "lr": 1e-2, "candidates": 20,
    "controller_steps": 5, "controller_batch": 8, "controller_lr": 3.5e-3, "entropy_weight": 1e-4, "seeds": 3,
    "gt_sample": 6, "gt_repeats": 6,
}  # fmt: skip


def _one_shot_ranking(result: nas.SearchResult, archs: list[nas.Architecture], truth: list[float], val: Any) -> float:
    """Spearman's correlation between the shared-weight validation accuracy and the ground truth."""
    if len(archs) < 3:
        return float("nan")
    return nas.spearman([nas.shared_accuracy(result.supernet, a, val) for a in archs], truth)


def compute(cfg: Config, ctx: Context) -> Metrics:
    with threads(1):
        space, splits = setup(cfg, ctx)
        truth = ground_truth(cfg, ctx, space, splits)
        table = truth.scores(ctx.progress(sample(space, cfg["gt_sample"], ctx, "gt-sample"), "ground truth"))
        gt_sample = [s.test_accuracy for s in table]
        repeat_archs = [space.parse(s.arch) for s in table[: cfg["gt_repeats"]]]
        repeat = ground_truth(cfg, ctx, space, splits, offset=1, name="ground_truth_repeat").scores(repeat_archs)
        training, enas_cfg = shared_training(cfg), enas_config(cfg)
        runs = []
        for s in ctx.progress(range(cfg["seeds"]), "seeds"):
            seed = _rng.derive(ctx.seed, "search", s)
            row: dict[str, Any] = {"seed": seed}
            for name, result in (("random", nas.random_search(space, splits, training, seed=seed)),
                                 ("enas", nas.enas(space, splits, training, enas_cfg, seed=seed))):  # fmt: skip
                score = truth.score(result.best)
                row[name] = {
                    "best": score.arch,
                    "ground_truth": score.test_accuracy,
                    "shared_val_accuracy": max(result.candidate_accuracy),
                    "distinct_candidates": len(set(result.candidates)),
                    "percentile_in_sample": percentile(score.test_accuracy, gt_sample),
                    "one_shot_ranking": _one_shot_ranking(
                        result, [space.parse(t.arch) for t in table], gt_sample, splits.val
                    ),
                    "counts": result.counts,
                    "seconds": result.seconds,
                }
            runs.append(row)
    first = [r.test_accuracy for r in table[: len(repeat)]]
    return {
        "space_size": len(space),
        "runs": runs,
        "ground_truth": {
            **truth_summary(table),
            "repeat_spearman": nas.spearman(first, [r.test_accuracy for r in repeat]) if len(repeat) > 2 else None,
            "repeat_mean_abs_difference": sum(abs(a - b.test_accuracy) for a, b in zip(first, repeat)) / max(len(repeat), 1),
            "sample_accuracy": gt_sample,
            "table": truth.table(),
            "repeat_table": [r.as_dict() for r in repeat],
        },
    }  # fmt: skip


def _stats(m: Metrics, name: str) -> tuple[float, float]:
    return mean_sd([r[name]["ground_truth"] for r in m["runs"]])


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    (me, se), (mr, sr) = _stats(m, "enas"), _stats(m, "random")
    pooled = ((se**2 + sr**2) / 2) ** 0.5
    gap = abs(me - mr) / pooled if pooled > 0 else (0.0 if me == mr else float("inf"))
    out = [
        Claim.at_most(
            f"|ENAS - random| best-of-{cfg['candidates']} ground-truth accuracy over {cfg['seeds']} seeds, in pooled "
            f"standard deviations (ENAS {me:.3f} +- {se:.3f}, random {mr:.3f} +- {sr:.3f})",
            gap,
            1.0,
        )
    ]
    rho = m["ground_truth"]["repeat_spearman"]
    if rho is not None:
        out.append(Claim.at_least(
            f"the ground truth is reproducible: Spearman between two training seeds over {cfg['gt_repeats']} cells",
            rho, 0.8,
        ))  # fmt: skip
    return out


def notes(m: Metrics, cfg: Config) -> str:
    gt = m["ground_truth"]
    lines = [
        f"Ground truth: {gt['size']} uniform cells of {m['space_size']}, test accuracy {gt.get('mean', 0):.3f} "
        f"+- {gt.get('sd', 0):.3f} (max {gt.get('max', 0):.3f}), "
        f"{gt.get('cpu_seconds_per_architecture', 0):.2f} CPU s per cell.",
        "",
        "| seed | random pick | ground truth | ENAS pick | ground truth |",
        "|---|---|---|---|---|",
    ]
    for k, r in enumerate(m["runs"]):
        lines.append(f"| {k} | {r['random']['best']} | {r['random']['ground_truth']:.3f} | "
                     f"{r['enas']['best']} | {r['enas']['ground_truth']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    sample_acc = m["ground_truth"]["sample_accuracy"]
    if sample_acc:
        left.hist(sample_acc, bins=20, color="0.8", label=f"uniform sample ({len(sample_acc)})")
    for name, color in (("random", "tab:blue"), ("enas", "tab:orange")):
        values = [r[name]["ground_truth"] for r in m["runs"]]
        for k, v in enumerate(values):
            left.axvline(
                v, color=color, lw=2, alpha=0.8, label=f"{name} best-of-{cfg['candidates']}" if k == 0 else None
            )
    left.set_xlabel("ground-truth test accuracy (trained from scratch)")
    left.set_ylabel("cells")
    left.set_title(f"picks over {cfg['seeds']} seeds")
    left.legend(fontsize=8)
    rank = [r["random"]["one_shot_ranking"] for r in m["runs"]] + [r["enas"]["one_shot_ranking"] for r in m["runs"]]
    n = len(m["runs"])
    right.bar(range(n), rank[:n], width=0.4, label="random search supernet")
    right.bar([k + 0.4 for k in range(n)], rank[n:], width=0.4, label="ENAS supernet")
    right.axhline(0.0, color="k", lw=0.8)
    right.set_xlabel("seed")
    right.set_ylabel("Spearman(shared-weight accuracy, ground truth)")
    right.set_title("how well the shared weights rank the uniform sample")
    right.legend(fontsize=8)
    return {"enas_vs_random": fig}


EXPERIMENT = register(
    Experiment(
        "enas-vs-random",
        paper=NAS_PAPER,
        summary=(
            "ENAS does no better than random search with weight sharing at the same budget: on a ground truth "
            "computed in code (MNIST-1D cells trained from scratch), their best-of-100 accuracies are within one "
            "standard deviation over 5 seeds."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        notes=notes,
        figures=("enas_vs_random",),
    )
)
