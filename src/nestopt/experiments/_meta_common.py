"""Shared pieces of the experiments of composed nested problems: paper names, AUROC and a linear probe."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MAML_PAPERS", "PRETRAIN_PAPER", "auroc", "linear_probe"]

PRETRAIN_PAPER = "Meta-Learning to Improve Pre-Training (Raghu, Lorraine, Kornblith, McDermott, Duvenaud, NeurIPS 2021)"
MAML_PAPERS = (
    "Model-Agnostic Meta-Learning (Finn et al., ICML 2017); Meta-Learning with Implicit Gradients "
    "(Rajeswaran et al., NeurIPS 2019)"
)


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The area under the ROC curve of binary ``labels`` ranked by ``scores`` (ties count one half).

    Example:
        >>> auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        0.75
    """
    s, y = scores.reshape(-1), labels.reshape(-1).bool()
    pos, neg = s[y], s[~y]
    wins = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    return float(wins.mean())


def linear_probe(train_z: torch.Tensor, train_y: torch.Tensor, test_z: torch.Tensor, *, l2: float) -> torch.Tensor:
    """Logistic regression (L-BFGS, L2 penalty ``l2``) on standardized frozen features; the test logits.

    ``train_y`` is ``[n, 1]`` of 0/1 for a binary probe or ``[n]`` of class indices for a multiclass one.
    """
    mu, sd = train_z.mean(0), train_z.std(0) + 1e-6
    a, b = (train_z - mu) / sd, (test_z - mu) / sd
    binary = train_y.dim() == 2
    classes = 1 if binary else int(train_y.max()) + 1
    w = torch.zeros(a.shape[1], classes, dtype=a.dtype, requires_grad=True)
    bias = torch.zeros(classes, dtype=a.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")
    fit = F.binary_cross_entropy_with_logits if binary else F.cross_entropy

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = fit(a @ w + bias, train_y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return b @ w + bias
