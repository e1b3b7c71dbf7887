"""The ``icgn-vs-icnn`` experiment: its quick run passes every claim (the full run is marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestopt import experiments


def _check(result: dict, out: Path) -> None:
    failed = [c["detail"] or c["name"] for c in result["claims"] if not c["passed"]]
    assert not failed, failed
    assert (out / "results.json").exists() and (out / "report.md").exists()
    assert json.loads((out / "results.json").read_text())["experiment"] == "icgn-vs-icnn"
    assert result["figures"] and all((out / f).exists() for f in result["figures"])


def test_quick_run_passes_its_claims(tmp_path: Path) -> None:
    _check(experiments.run("icgn-vs-icnn", quick=True, out_dir=tmp_path), tmp_path)


@pytest.mark.slow
def test_full_run_passes_its_claims(tmp_path: Path) -> None:
    _check(experiments.run("icgn-vs-icnn", quick=False, out_dir=tmp_path), tmp_path)


def test_gaussian_ot_map_is_the_closed_form() -> None:
    import torch

    from nestopt.experiments.icgn_vs_icnn import gaussian_ot_map

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 3, generator=gen, dtype=torch.float64), torch.randn(3, 3, generator=gen, dtype=torch.float64)
    s1, s2 = a @ a.T + 0.1 * torch.eye(3, dtype=torch.float64), b @ b.T + 0.1 * torch.eye(3, dtype=torch.float64)
    m1, m2 = torch.randn(3, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float64)
    m, shift = gaussian_ot_map(m1, s1, m2, s2)
    torch.testing.assert_close(m, m.T)
    assert float(torch.linalg.eigvalsh(m).min()) > 0  # the gradient of a convex quadratic
    torch.testing.assert_close(m @ s1 @ m, s2)  # pushes N(m1, S1) onto N(m2, S2)
    torch.testing.assert_close(m @ m1 + shift, m2)
    # optimal among linear maps pushing S1 to S2: it beats the Cholesky-based map on E|T(x) - x|^2
    l1, l2 = torch.linalg.cholesky(s1), torch.linalg.cholesky(s2)
    other = l2 @ torch.linalg.inv(l1)
    torch.testing.assert_close(other @ s1 @ other.T, s2)
    cost = lambda t: torch.trace(
        (t - torch.eye(3, dtype=torch.float64)) @ s1 @ (t - torch.eye(3, dtype=torch.float64)).T
    )
    assert float(cost(m)) <= float(cost(other)) + 1e-12


def test_convex_test_function_gradient_is_monotone() -> None:
    import torch

    from nestopt.experiments.icgn_vs_icnn import convex_gradient

    x = 3 * torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    jac = torch.func.vmap(torch.func.jacrev(convex_gradient))(x)
    torch.testing.assert_close(jac, jac.mT)
    assert float(torch.linalg.eigvalsh(jac).min()) >= 0.5 - 1e-12  # Hessian >= I/2 from the quadratic term
