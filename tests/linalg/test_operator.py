"""LinearOperator: products, tags, views, dense matrices, and the solvers' dispatch on tags."""

import pytest
import torch

from nestopt import autodiff, linalg, tree
from nestopt.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedError

D = torch.float64


def _matrix(n=6, seed=0):
    return torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=D)


def _tree_like(n):
    return {"a": torch.zeros(2, dtype=D), "b": torch.zeros(n - 2, dtype=D)}


def test_from_matrix_products_transpose_and_materialize():
    A = _matrix()
    op = linalg.LinearOperator.from_matrix(A, _tree_like(6))
    assert not op.symmetric and not op.psd and op.has_transpose
    spec = tree.flatten(op.like)[1]
    v = tree.unflatten(torch.arange(6, dtype=D), spec)
    torch.testing.assert_close(tree.flatten(op.matvec(v))[0], A @ tree.flatten(v)[0])
    torch.testing.assert_close(tree.flatten(op.rmatvec(v))[0], A.T @ tree.flatten(v)[0])
    torch.testing.assert_close(linalg.materialize(op), A)
    torch.testing.assert_close(linalg.materialize(op.T), A.T)
    assert op.T.T.matvec(v)["a"].tolist() == op.matvec(v)["a"].tolist()
    batch = tree.unflatten(torch.eye(6, dtype=D)[:3], spec)
    rows = op.rmatmat(batch)
    torch.testing.assert_close(torch.cat([rows["a"], rows["b"]], 1), A.T[:, :3].T)


def test_symmetric_detection_and_tags():
    A = _matrix()
    S = A + A.T
    assert linalg.LinearOperator.from_matrix(S).symmetric
    assert not linalg.LinearOperator.from_matrix(A).symmetric
    sym = linalg.LinearOperator.from_matrix(S)
    assert sym.T is sym
    x = {"x": torch.ones(6, dtype=D)}
    torch.testing.assert_close(sym.rmatvec(x)["x"], S @ x["x"])
    spd = linalg.LinearOperator.from_matrix(A @ A.T, psd=True)
    assert spd.psd and spd.shifted(0.5).psd and not spd.shifted(-0.5).psd
    with pytest.raises(InvalidArgumentError, match="psd=True needs symmetric=True"):
        linalg.LinearOperator(lambda v: v, x, symmetric=False, psd=True)
    with pytest.raises(InvalidArgumentError, match="rmatvec was given for a symmetric operator"):
        linalg.LinearOperator(lambda v: v, x, rmatvec=lambda v: v)
    with pytest.raises(ShapeMismatchError, match="square"):
        linalg.LinearOperator.from_matrix(torch.zeros(2, 3))
    with pytest.raises(ShapeMismatchError, match="like has 3 entries"):
        linalg.LinearOperator.from_matrix(A, {"x": torch.zeros(3, dtype=D)})


def test_an_operator_without_rmatvec_refuses_transposes():
    A = _matrix()
    op = linalg.LinearOperator(lambda v: {"x": A @ v["x"]}, {"x": torch.zeros(6, dtype=D)}, symmetric=False)
    assert not op.has_transpose
    with pytest.raises(UnsupportedError, match="rmatvec"):
        op.rmatvec({"x": torch.ones(6, dtype=D)})
    with pytest.raises(UnsupportedError, match="rmatvec"):
        _ = op.T


def test_shifted_is_damping_and_views_share_the_counter():
    A = _matrix()
    S = A @ A.T + torch.eye(6, dtype=D)
    S = 0.5 * (S + S.T)
    op = linalg.LinearOperator.from_matrix(S)
    shifted = op.shifted(0.7)
    torch.testing.assert_close(linalg.materialize(shifted), S + 0.7 * torch.eye(6, dtype=D))
    rhs = {"x": torch.linspace(-1, 1, 6, dtype=D)}
    damped = linalg.CG(steps=30, tol=1e-13, damping=0.7).solve(op, rhs).value["x"]
    via_view = linalg.CG(steps=30, tol=1e-13).solve(shifted, rhs).value["x"]
    torch.testing.assert_close(damped, via_view, rtol=1e-12, atol=1e-14)
    before = op.calls
    shifted.matvec(rhs)
    op.T.matvec(rhs)
    assert op.calls == before + 2 and shifted.calls == op.calls
    general = linalg.LinearOperator.from_matrix(A)
    torch.testing.assert_close(linalg.materialize(general.shifted(2.0).T), A.T + 2 * torch.eye(6, dtype=D))


def test_hessian_operator_is_symmetric_and_counts_products():
    loss = lambda p, h, b: (p["w"].sin() ** 2).sum() * p["v"].exp().sum()
    params = {"w": torch.linspace(0.1, 0.9, 4, dtype=D), "v": torch.tensor([0.3, -0.2], dtype=D)}
    op = linalg.LinearOperator.hessian(autodiff.linearize(loss, params, {}, None))
    assert op.symmetric and not op.psd
    dense = torch.func.hessian(lambda w, v: loss({"w": w, "v": v}, {}, None), argnums=(0, 1))(params["w"], params["v"])
    full = torch.cat([torch.cat([dense[0][0], dense[0][1]], 1), torch.cat([dense[1][0], dense[1][1]], 1)], 0)
    torch.testing.assert_close(linalg.materialize(op), full)
    assert op.calls == 6


@pytest.mark.parametrize("solver", [linalg.CG(), linalg.Nystrom(rank=3)], ids=["cg", "nystrom"])
def test_symmetric_solvers_refuse_a_non_symmetric_operator(solver):
    op = linalg.LinearOperator.from_matrix(_matrix())
    with pytest.raises(UnsupportedError, match=r"needs a symmetric operator.*GMRES, linalg.BiCGSTAB, linalg.NormalCG"):
        solver.solve(op, {"x": torch.ones(6, dtype=D)})


def test_normal_cg_needs_a_transpose():
    A = _matrix()
    op = linalg.LinearOperator(lambda v: {"x": A @ v["x"]}, {"x": torch.zeros(6, dtype=D)}, symmetric=False)
    with pytest.raises(UnsupportedError, match="NormalCG needs transpose products.*GMRES"):
        linalg.NormalCG().solve(op, {"x": torch.ones(6, dtype=D)})
    with pytest.raises(InvalidArgumentError, match="LinearOperator"):
        linalg.GMRES().solve(A, {"x": torch.ones(6, dtype=D)})  # type: ignore[arg-type]
