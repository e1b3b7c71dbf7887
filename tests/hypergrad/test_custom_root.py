import pytest
import torch

from nestopt import hypergrad, linalg
from nestopt.errors import ShapeMismatchError

D = torch.float64


def _data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(30, 5, generator=gen, dtype=D), torch.randn(30, generator=gen, dtype=D)


def ridge_optimality(p, h, x, y):
    """Gradient of 0.5 |x w - y|^2 + 0.5 sum_i exp(l_i) w_i^2."""
    return {"w": x.T @ (x @ p["w"] - y) + h["l"].exp() * p["w"]}


def closed_form_jacobian(lam, x, y):
    a = x.T @ x + torch.diag(lam.exp())
    w = torch.linalg.solve(a, x.T @ y)
    # dw/dl_i = -A^-1 e_i exp(l_i) w_i
    return -torch.linalg.solve(a, torch.diag(lam.exp() * w))


@pytest.mark.parametrize("solver", [linalg.CG(steps=50, tol=1e-14), linalg.Exact()], ids=["cg", "exact"])
def test_iterative_ridge_solver_gets_the_closed_form_jacobian(solver):
    x, y = _data()

    @hypergrad.custom_root(ridge_optimality, solver=solver)
    def ridge_by_gradient_descent(h, x, y):
        a = x.T @ x + torch.diag(h["l"].exp())
        step = 1.0 / float(torch.linalg.eigvalsh(a).max())
        w = torch.zeros(5, dtype=D)
        for _ in range(5000):
            w = w - step * (a @ w - x.T @ y)
        return {"w": w}

    lam = torch.linspace(-1.0, 1.0, 5, dtype=D)
    jac = torch.autograd.functional.jacobian(lambda l_: ridge_by_gradient_descent({"l": l_}, x, y)["w"], lam)
    assert torch.allclose(jac, closed_form_jacobian(lam, x, y), rtol=1e-7, atol=1e-10)
    assert ridge_by_gradient_descent.last_info.status is linalg.Status.CONVERGED


def test_gradcheck_through_custom_root():
    x, y = _data(1)

    @hypergrad.custom_root(ridge_optimality, solver=linalg.Exact())
    def ridge(h, x, y):
        return {"w": torch.linalg.solve(x.T @ x + torch.diag(h["l"].exp()), x.T @ y)}

    lam = torch.zeros(5, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda l_: (ridge({"l": l_}, x, y)["w"] ** 2).sum(), (lam,))


def test_non_symmetric_optimality_with_exact():
    # fixed point of w = tanh(A w + h): F(w, h) = w - tanh(A w + h); its Jacobian is not symmetric
    gen = torch.Generator().manual_seed(2)
    a = 0.3 * torch.randn(4, 4, generator=gen, dtype=D)
    fixed_point = lambda p, h: {"w": p["w"] - torch.tanh(a @ p["w"] + h["b"])}

    @hypergrad.custom_root(fixed_point, solver=linalg.Exact(), symmetric=False)
    def iterate(h):
        w = torch.zeros(4, dtype=D)
        for _ in range(200):
            w = torch.tanh(a @ w + h["b"])
        return {"w": w}

    b = torch.randn(4, generator=gen, dtype=D)

    def unrolled(b_):
        w = torch.zeros(4, dtype=D)
        for _ in range(200):
            w = torch.tanh(a @ w + b_)
        return w

    jac = torch.autograd.functional.jacobian(lambda b_: iterate({"b": b_})["w"], b)
    assert torch.allclose(jac, torch.autograd.functional.jacobian(unrolled, b), atol=1e-10)


def test_optimality_fn_with_wrong_keys():
    x, y = _data()
    bad = hypergrad.custom_root(lambda p, h, x, y: {"v": p["w"]}, solver=linalg.Exact())(
        lambda h, x, y: {"w": torch.zeros(5, dtype=D)}
    )
    lam = torch.zeros(5, dtype=D, requires_grad=True)
    with pytest.raises(ShapeMismatchError, match="keys of the solution"):
        bad({"l": lam}, x, y)["w"].sum().backward()
