"""Complex Adam on a real GAN: a small DCGAN on scikit-learn's 8x8 digits, scored by a Frechet distance.

The complex-momentum paper trained BigGAN on CIFAR-10 to a better inception score with complex Adam; neither
those data nor pretrained inception weights exist here, so this is the laptop-scale version. A DCGAN
(generator: 16-d noise -> linear -> 2x2 -> transposed convolutions -> 8x8 tanh image; discriminator: strided
convolutions -> linear; LeakyReLU, no batch norm; ``width`` channels at the first convolution) learns the
digits' training images, scaled to [-1, 1], with the non-saturating loss and alternating updates (the
discriminator first). Three optimizers get the same budget, the same learning rate (1e-3: the best of
{2e-4, 5e-4, 1e-3} for Adam at the full budget, two seeds), the same initial weights and the same batches
within a seed: Adam with :math:`\\beta_1 = 0.5`, ComplexAdam with
:math:`\\beta_1 = 0.8 e^{i\\pi/8}`, and OptimisticAdam with :math:`\\beta_1 = 0.5` (all :math:`\\beta_2 = 0.999`).

The score is a Frechet distance in the feature space of a small classifier (MLP 64 -> 64 -> 32 -> 10, ReLU;
features: the 32 units before the output) trained in the same run on the real training images: between the
features of ``samples`` generated images and those of the real held-out images (validation and test
splits), :math:`\\|\\mu_1 - \\mu_2\\|^2 + \\mathrm{tr}(\\Sigma_1 + \\Sigma_2 - 2 (\\Sigma_1^{1/2} \\Sigma_2
\\Sigma_1^{1/2})^{1/2})`. The distance of real training images to the held-out ones is the floor it can reach.

ComplexAdam's bias correction: :math:`\\hat m_t = m_t / (1 - \\beta_1^t)` with the complex power, and the update
uses :math:`\\mathrm{Re}\\,\\hat m_t` (see docs/diversity.md for the check of this form).

Finding (full run, seed 0): ComplexAdam's distance is no higher than Adam's in only 2 of 5 seeds (the claim
asks 4); its mean is lower (17.2 against 20.6) and its spread much smaller (16.3 to 18.8 against 10.5 to
34.6), and OptimisticAdam is best (mean 11.4). The quick run's 100 steps only rank the optimizers' first steps
(its verdict flips with the budget).
The claim is a documented failure (docs/diversity.md, gan-digits).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nestopt import data
from nestopt.experiments._games_common import PAPER
from nestopt.experiments.registry import Claim, Config, Context, Experiment, KnownFailure, Metrics, register
from nestopt.optim import ComplexAdam, OptimisticAdam
from nestopt.profile import threads

FULL = {"seeds": 5, "steps": 2000, "lr": 1e-3, "batch_size": 64, "width": 16, "latent": 16, "samples": 1000,
        "classifier_steps": 400}  # fmt: skip
QUICK = {**FULL, "seeds": 2, "steps": 100, "width": 8, "samples": 500, "classifier_steps": 200}
OPTIMIZERS: dict[str, Any] = {
    "Adam": lambda p, lr: torch.optim.Adam(p, lr=lr, betas=(0.5, 0.999)),
    "ComplexAdam": lambda p, lr: ComplexAdam(p, lr=lr, betas=((0.8, math.pi / 8), 0.999)),
    "OptimisticAdam": lambda p, lr: OptimisticAdam(p, lr=lr, betas=(0.5, 0.999)),
}


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Frechet distance between Gaussians fitted to the rows of ``a`` and of ``b`` (float64)."""
    a, b = a.double(), b.double()
    mu = a.mean(0) - b.mean(0)
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(s1)
    root1 = (v * w.clamp_min(0).sqrt()) @ v.T
    middle = torch.linalg.eigvalsh(root1 @ s2 @ root1).clamp_min(0).sqrt().sum()
    return float(mu @ mu + torch.trace(s1) + torch.trace(s2) - 2 * middle)


def _generator(latent: int, width: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(latent, 2 * width * 4), nn.LeakyReLU(0.2), nn.Unflatten(1, (2 * width, 2, 2)),
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh(),
    )  # fmt: skip


def _discriminator(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(2 * width * 4, 1),
    )  # fmt: skip


def _classifier(d: data.Splits, cfg: Config, seed: int) -> tuple[nn.Sequential, float]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = d.train.x * 2 - 1, d.train.y
    for _ in range(cfg["classifier_steps"]):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    with torch.no_grad():
        acc = float((net(d.test.x * 2 - 1).argmax(1) == d.test.y).float().mean())
    return net, acc


def _train(name: str, cfg: Config, seed: int, real: torch.Tensor) -> nn.Module:
    """Alternating updates, the discriminator first, non-saturating generator loss."""
    torch.manual_seed(seed)
    gen, disc = _generator(cfg["latent"], cfg["width"]), _discriminator(cfg["width"])
    opt_g, opt_d = (OPTIMIZERS[name](list(m.parameters()), cfg["lr"]) for m in (gen, disc))
    sp = nn.functional.softplus
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(cfg["steps"]):
        idx = torch.randint(len(real), (cfg["batch_size"],), generator=g)
        z = torch.randn(cfg["batch_size"], cfg["latent"], generator=g)
        fake = gen(z)
        loss_d = sp(-disc(real[idx])).mean() + sp(disc(fake.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = sp(-disc(gen(z))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    return gen


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Train the feature classifier, then each optimizer's GAN on every seed, and score the samples."""
    d = data.digits(n_train=1200, n_val=197, n_test=400, seed=ctx.seed)
    real = (d.train.x * 2 - 1).reshape(-1, 1, 8, 8)
    held_out = torch.cat([d.val.x, d.test.x]) * 2 - 1
    with threads(1):
        clf, clf_acc = _classifier(d, cfg, ctx.seed + 7)
        features = clf[:4]  # up to the 32-unit layer and its ReLU
        with torch.no_grad():
            target = features(held_out)
            floor = frechet_distance(features(d.train.x * 2 - 1), target)
        scores: dict[str, list[float]] = {name: [] for name in OPTIMIZERS}
        samples: dict[str, torch.Tensor] = {}
        for seed in ctx.progress(range(cfg["seeds"]), desc="seeds"):
            for name in OPTIMIZERS:
                gen = _train(name, cfg, 1000 * (ctx.seed + 1) + seed, real)
                with torch.no_grad():
                    z = torch.randn(cfg["samples"], cfg["latent"], generator=ctx.generator(2000 + seed))
                    images = gen(z).reshape(cfg["samples"], 64)
                    scores[name].append(frechet_distance(features(images), target))
                if seed == 0:
                    samples[name] = images[:32].reshape(32, 8, 8)
    wins = sum(c <= a for c, a in zip(scores["ComplexAdam"], scores["Adam"]))
    return {
        "classifier_test_accuracy": clf_acc,
        "frechet_floor_real_train_vs_held_out": floor,
        "frechet_distance": scores,
        "mean_frechet_distance": {k: sum(v) / len(v) for k, v in scores.items()},
        "complex_adam_no_worse_than_adam_seeds": wins,
        "_samples": samples,
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    need = math.ceil(0.8 * cfg["seeds"])
    return [
        Claim.at_least(
            f"seeds (of {cfg['seeds']}) where ComplexAdam's Frechet distance is no higher than Adam's",
            m["complex_adam_no_worse_than_adam_seeds"],
            need,
        ),
        Claim.at_least("feature classifier test accuracy", m["classifier_test_accuracy"], 0.9),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    names = list(OPTIMIZERS)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.2 * (len(names) + 1), 4.2))
    for ax, name in zip(axes, names):
        grid = m["_samples"][name].reshape(4, 8, 8, 8).permute(0, 2, 1, 3).reshape(32, 64)
        ax.imshow(grid, cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(f"{name}: samples (seed 0)")
        ax.axis("off")
    ax = axes[-1]
    for k, name in enumerate(names):
        v = m["frechet_distance"][name]
        ax.scatter([k] * len(v), v, s=30)
        ax.plot([k - 0.2, k + 0.2], [sum(v) / len(v)] * 2, color="k")
    ax.axhline(m["frechet_floor_real_train_vs_held_out"], color="tab:green", ls=":", label="real train images")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("Frechet distance (classifier features)")
    ax.set_title(f"{cfg['seeds']} seeds, {cfg['steps']} steps each")
    ax.legend(fontsize=8)
    return {"gan-digits": fig}


EXPERIMENT = register(
    Experiment(
        "gan-digits",
        paper=PAPER,
        summary=(
            "A DCGAN on scikit-learn's 8x8 digits trained with complex Adam (|beta1| = 0.8, phase pi/8) reaches a "
            "Frechet distance (in a digit classifier's features) no higher than with Adam (beta1 = 0.5) in at "
            "least 4 of 5 seeds at the same budget; OptimisticAdam is reported alongside."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("gan-digits",),
        known_failures=(KnownFailure("seeds (of", "docs/diversity.md, gan-digits"),),
    )
)
