"""IFT hypergradients of an overparameterized inner problem, whose Hessian is singular.

Inner: (1/n)|X w - B u|^2 with X of shape (n, d), n < d. Gradient descent from w0 reaches
w*(u) = P_N w0 + X^+ B u (the solution closest to w0), so the hypergradient of F(w*(u)) is
B^T (X^+)^T grad F. The outer gradient has a part outside the range of H = (2/n) X^T X, yet the solvers
whose null-space error the mixed term (-(2/n) B^T X) annihilates give that hypergradient exactly.
"""

import pytest
import torch

from nestopt import hypergrad, linalg
from nestopt.optim import functional

D = torch.float64
N, DIM, P, M = 5, 9, 4, 7


@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(0)
    x, b = torch.randn(N, DIM, generator=gen, dtype=D), torch.randn(N, P, generator=gen, dtype=D)
    xv, yv = torch.randn(M, DIM, generator=gen, dtype=D), torch.randn(M, generator=gen, dtype=D)
    w0, u = torch.randn(DIM, generator=gen, dtype=D), torch.randn(P, generator=gen, dtype=D)
    pinv = torch.linalg.pinv(x)

    def response(u):  # the inner solution closest to w0
        return w0 - pinv @ (x @ w0) + pinv @ (b @ u)

    inner = lambda p, h, batch: ((x @ p["w"] - b @ h["u"]) ** 2).mean()
    outer = lambda p, h, batch: ((xv @ p["w"] - yv) ** 2).mean()
    return {"inner": inner, "outer": outer, "response": response, "u": u, "x": x, "xv": xv, "yv": yv}


def _hypergradient(pr, solver):
    w = {"w": pr["response"](pr["u"])}
    return hypergrad.implicit(pr["inner"], pr["outer"], w, {"u": pr["u"]}, None, None, solver=solver)


def test_the_outer_gradient_leaves_the_range_of_the_hessian(problem):
    w = problem["response"](problem["u"])
    g = 2 * problem["xv"].T @ (problem["xv"] @ w - problem["yv"]) / M
    x = problem["x"]
    in_range = x.T @ torch.linalg.lstsq(x.T, g[:, None]).solution[:, 0]
    assert float((g - in_range).norm()) > 0.3 * float(g.norm())


@pytest.mark.parametrize(
    "solver",
    [linalg.Exact(), linalg.Neumann(steps=3000, alpha=0.05), linalg.NormalCG(tol=1e-14)],
    ids=["exact", "neumann", "normal_cg"],
)
def test_solvers_give_the_hypergradient_of_the_closest_solution(problem, solver):
    # central finite differences of u -> F(w*(u)), the composite that cold-start gradient descent optimizes
    u, eps = problem["u"], 1e-6
    fd = torch.stack([
        (problem["outer"]({"w": problem["response"](u + eps * e)}, {}, None)
         - problem["outer"]({"w": problem["response"](u - eps * e)}, {}, None)) / (2 * eps)
        for e in torch.eye(P, dtype=D)
    ])  # fmt: skip
    res = _hypergradient(problem, solver)
    torch.testing.assert_close(res.grads["u"], fd, rtol=1e-7, atol=1e-9)


def test_the_ift_does_not_see_a_null_space_that_moves_with_the_hyperparameters():
    # Inner (z^T w - 1)^2 with the input z the hyperparameter: its solution set {z^T w = 1} turns with z, and
    # gradient descent from w0 reaches w*(z) = w0 + z (1 - z^T w0) / |z|^2. The IFT with the pseudo-inverse
    # differentiates only along the range of H = 2 z z^T, so it misses how the projection turns: it gives
    # -(z^T g / |z|^2) w, not the derivative of w*(z). Unrolling gradient descent from w0 sees all of it.
    z, w0 = torch.tensor([1.0, 0.5, -0.3], dtype=D), torch.tensor([0.2, -0.4, 0.3], dtype=D)
    target = torch.tensor([0.7, -1.2, 2.0], dtype=D)
    response = lambda z: w0 + z * (1 - z @ w0) / (z @ z)
    outer = lambda p, h, b: ((p["w"] - target) ** 2).sum()
    inner = lambda p, h, b: (h["z"] @ p["w"] - 1) ** 2
    eps = 1e-6
    fd = torch.stack([
        (outer({"w": response(z + eps * e)}, {}, None) - outer({"w": response(z - eps * e)}, {}, None)) / (2 * eps)
        for e in torch.eye(3, dtype=D)
    ])  # fmt: skip
    w = response(z)
    ift = hypergrad.implicit(inner, outer, {"w": w}, {"z": z}, None, None, solver=linalg.Exact()).grads["z"]
    g = 2 * (w - target)
    torch.testing.assert_close(ift, -(z @ g) / (z @ z) * w)
    assert float((ift - fd).norm()) > 0.1 * float(fd.norm())
    steps = 200
    unrolled = hypergrad.unrolled(inner, outer, {"w": w0}, {"z": z}, [None] * steps, None,
                                  optimizer=functional.sgd(lr=0.1), steps=steps)  # fmt: skip
    torch.testing.assert_close(unrolled.grads["z"], fd, rtol=1e-6, atol=1e-8)
