"""eigsh (Lanczos), eigs (Arnoldi) and power iteration against torch.linalg.eigh / eig (float64)."""

import pytest
import torch

from nestopt import autodiff, linalg, tree
from nestopt.errors import InvalidArgumentError, SolverDivergedError, SolverWarning, UnsupportedError

D = torch.float64
N = 120


def _symmetric(eigenvalues, seed=0):
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=D))
    a = (q * torch.as_tensor(eigenvalues, dtype=D)) @ q.T
    return 0.5 * (a + a.T)


def _as_tree_operator(a):
    n = a.shape[0]
    like = {"w": torch.zeros(3, n // 6, dtype=D), "b": torch.zeros(n - 3 * (n // 6), dtype=D)}
    return linalg.LinearOperator.from_matrix(a, like)


SPECTRA = {
    "separated": torch.cat([torch.tensor([20.0, 15.0, 12.0]), torch.linspace(-5.0, 5.0, N - 6), torch.tensor([-8.0, -11.0, -14.0])]),
    "clustered": torch.cat([torch.tensor([10.0, 10.0 - 1e-3, 10.0 - 2e-3]), torch.linspace(-1.0, 5.0, N - 6),
                            torch.tensor([-3.0, -3.0 + 1e-3, -3.0 + 2e-3])]),
    "degenerate": torch.cat([torch.full((3,), 7.0), torch.linspace(-1.0, 5.0, N - 6), torch.full((3,), -4.0)]),
    "indefinite": torch.linspace(-9.0, 6.0, N),
}  # fmt: skip


def _wanted(ref, which, k):
    if which == "LA":
        return ref.flip(0)[:k]
    if which == "SA":
        return ref[:k]
    return ref[ref.abs().argsort(descending=True, stable=True)][:k]


def _check_pairs(a, res, scale, tol=1e-7):
    vecs = torch.stack([tree.flatten(v)[0] for v in res.eigenvectors], 1)
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(vecs.shape[1], dtype=vecs.dtype), atol=1e-8, rtol=0)
    true_res = torch.linalg.vector_norm(a.to(vecs.dtype) @ vecs - vecs * res.eigenvalues, dim=0)
    assert float(true_res.max()) <= tol * scale
    torch.testing.assert_close(res.residuals, true_res.to(D), atol=1e-10 * scale, rtol=1e-3)


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
@pytest.mark.parametrize("spectrum", list(SPECTRA))
def test_eigsh_matches_eigh(spectrum, which):
    a = _symmetric(SPECTRA[spectrum])
    block = 3 if spectrum == "degenerate" else 1  # a repeated eigenvalue needs a block at least its multiplicity
    res = linalg.eigsh(_as_tree_operator(a), k=3, which=which, block_size=block)
    ref = torch.linalg.eigvalsh(a)
    scale = float(ref.abs().max())
    assert res.status is linalg.Status.CONVERGED and bool(res.converged.all())
    torch.testing.assert_close(res.eigenvalues, _wanted(ref, which, 3), atol=1e-10 * scale, rtol=0)
    _check_pairs(a, res, scale)
    assert res.products < N * 10 and res.eigenvectors[0]["w"].shape == (3, N // 6)


def test_eigsh_eigenvectors_match_eigh_for_separated_eigenvalues():
    a = _symmetric(SPECTRA["separated"])
    res = linalg.eigsh(_as_tree_operator(a), k=3, which="LA")
    _, ref = torch.linalg.eigh(a)
    for i, v in enumerate(res.eigenvectors):
        assert abs(float(tree.flatten(v)[0] @ ref[:, -1 - i])) == pytest.approx(1.0, abs=1e-12)


def test_eigsh_with_a_single_vector_still_returns_true_eigenpairs_on_a_degenerate_spectrum():
    a = _symmetric(SPECTRA["degenerate"])
    res = linalg.eigsh(_as_tree_operator(a), k=1)
    assert float(res.eigenvalues[0]) == pytest.approx(7.0, abs=1e-10)
    _check_pairs(a, res, 14.0)


def test_restarting_from_a_previous_eigenvector_tracks_it_cheaply():
    a = _symmetric(SPECTRA["indefinite"])
    op = _as_tree_operator(a)
    first = linalg.eigsh(op, k=1, which="SA")
    gen = torch.Generator().manual_seed(5)
    bump = 1e-4 * torch.randn(N, N, generator=gen, dtype=D)
    moved = _as_tree_operator(a + 0.5 * (bump + bump.T))
    cold = linalg.eigsh(moved, k=1, which="SA", seed=1)
    warm = linalg.eigsh(moved, k=1, which="SA", v0=first.eigenvectors[0])
    assert warm.status is cold.status is linalg.Status.CONVERGED
    assert warm.products < cold.products
    torch.testing.assert_close(warm.eigenvalues, cold.eigenvalues, atol=1e-9, rtol=0)


def test_seeds_are_deterministic():
    op = _as_tree_operator(_symmetric(SPECTRA["indefinite"]))
    a = linalg.eigsh(op, k=2, seed=3)
    b = linalg.eigsh(op, k=2, seed=torch.Generator().manual_seed(3))
    assert torch.equal(a.eigenvalues, b.eigenvalues) and a.products == b.products
    assert not torch.equal(linalg.eigsh(op, k=2, seed=4).eigenvalues, a.eigenvalues)


def _general(seed=0, n=N):
    """A non-normal matrix with known eigenvalues: rotation blocks a +- ib and real ones, in a skewed basis."""
    gen = torch.Generator().manual_seed(seed)
    pairs = [(-1.0 + 0.1 * i, 0.5 + 0.3 * i) for i in range(10)]
    blocks = [torch.tensor([[re, -im], [im, re]], dtype=D) for re, im in pairs]
    real = torch.linspace(-2.0, 1.5, n - 20, dtype=D)
    d = torch.block_diag(*blocks, torch.diag(real))
    s = torch.eye(n, dtype=D) + 0.3 * torch.randn(n, n, generator=gen, dtype=D) / n**0.5
    return s @ d @ torch.linalg.inv(s)


@pytest.mark.parametrize("which", ["LM", "LR", "SR", "LI", "SI"])
@pytest.mark.parametrize("block", [1, 2])
def test_eigs_matches_eig(which, block):
    a = _general()
    res = linalg.eigs(_as_tree_operator(a), k=4, which=which, block_size=block, tol=1e-10)
    ref = torch.linalg.eigvals(a)

    def key(z):
        return {"LM": -z.abs(), "LR": -z.real, "SR": z.real, "LI": -z.imag, "SI": z.imag}[which]

    want = ref[torch.argsort(key(ref), stable=True)]
    scale = float(ref.abs().max())
    assert res.status is linalg.Status.CONVERGED and res.eigenvalues.dtype == torch.complex128
    # the k best by the key, in order (conjugate pairs tie on LM/LR/SR), and each one an eigenvalue
    torch.testing.assert_close(key(res.eigenvalues), key(want[:4]), atol=1e-8 * scale, rtol=0)
    for value in res.eigenvalues:
        assert float((want[:6] - value).abs().min()) < 1e-8 * scale
    vecs = torch.stack([tree.flatten(v)[0] for v in res.eigenvectors], 1)
    assert vecs.dtype == torch.complex128
    true_res = torch.linalg.vector_norm(a.to(vecs.dtype) @ vecs - vecs * res.eigenvalues, dim=0)
    assert float(true_res.max()) <= 1e-9 * scale
    torch.testing.assert_close(res.residuals, true_res, atol=1e-11 * scale, rtol=1e-3)


def test_eigs_of_a_rotation_is_imaginary_and_of_a_symmetric_matrix_real():
    a = _symmetric(SPECTRA["separated"])
    res = linalg.eigs(_as_tree_operator(a), k=2, which="LR")
    torch.testing.assert_close(res.eigenvalues, torch.tensor([20.0, 15.0], dtype=torch.complex128), atol=1e-9, rtol=0)
    rot = torch.block_diag(
        torch.tensor([[0.0, -3.0], [3.0, 0.0]], dtype=D), torch.diag(torch.linspace(0, 1, 40, dtype=D))
    )
    res = linalg.eigs(linalg.LinearOperator.from_matrix(rot), k=2)
    torch.testing.assert_close(res.eigenvalues, torch.tensor([3j, -3j], dtype=torch.complex128), atol=1e-9, rtol=0)


def test_small_operators_are_solved_densely():
    a = _symmetric(torch.linspace(-1.0, 1.0, 10))
    op = linalg.LinearOperator.from_matrix(a)
    res = linalg.eigsh(op, k=10, which="SA")
    torch.testing.assert_close(res.eigenvalues, torch.linalg.eigvalsh(a))
    assert res.products == 10 and "dense" in res.message
    general = linalg.eigs(linalg.LinearOperator.from_matrix(_general(n=20)), k=3)  # krylov_size 20 + 1 > 20
    assert general.products == 20 and general.status is linalg.Status.CONVERGED


def _mlp_loss(params, hparams, batch):
    x, y = batch
    h = torch.tanh(x @ params["w1"] + params["b1"])
    return ((h @ params["w2"]).squeeze(-1) - y).pow(2).mean() + 1e-3 * (params["w1"] ** 2).sum()


@pytest.mark.parametrize("block", [1, 2])
def test_hessian_of_a_small_network(block):
    gen = torch.Generator().manual_seed(0)
    params = {"w1": 0.5 * torch.randn(4, 8, generator=gen, dtype=D), "b1": torch.zeros(8, dtype=D),
              "w2": 0.5 * torch.randn(8, 1, generator=gen, dtype=D)}  # fmt: skip
    batch = (torch.randn(32, 4, generator=gen, dtype=D), torch.randn(32, generator=gen, dtype=D))
    op = linalg.LinearOperator.hessian(autodiff.linearize(_mlp_loss, params, {}, batch))
    vec, spec = tree.flatten(params)
    dense = torch.func.hessian(lambda v: _mlp_loss(tree.unflatten(v, spec), {}, batch))(vec)
    ref = torch.linalg.eigvalsh(0.5 * (dense + dense.T))
    scale = float(ref.abs().max())
    top = linalg.eigsh(op, k=3, which="LA", block_size=block, tol=1e-10)
    bottom = linalg.eigsh(op, k=2, which="SA", block_size=block, tol=1e-10)
    torch.testing.assert_close(top.eigenvalues, ref.flip(0)[:3], atol=1e-9 * scale, rtol=0)
    torch.testing.assert_close(bottom.eigenvalues, ref[:2], atol=1e-9 * scale, rtol=0)
    assert float(ref[0]) < 0  # the Hessian is indefinite here
    _check_pairs(dense, top, scale, tol=1e-9)
    assert top.products == op.calls - bottom.products


def test_power_iteration_against_eigh_and_as_an_explicit_loop():
    a = _symmetric(torch.cat([torch.tensor([9.0]), torch.linspace(0.0, 4.0, 39)]))
    op = linalg.LinearOperator.from_matrix(a, {"p": torch.zeros(4, 5, dtype=D), "q": torch.zeros(20, dtype=D)})
    res = linalg.power_iteration(op, iterations=200, tol=1e-10)
    assert res.status is linalg.Status.CONVERGED and res.iterations < 200
    assert float(res.eigenvalues[0]) == pytest.approx(9.0, abs=1e-12)
    assert float(res.residuals[0]) <= 9e-10 and res.products == res.iterations
    # the fixed-budget form is exactly the textbook loop (the benchmarks rely on it)
    gen = torch.Generator().manual_seed(1)
    v = {k: torch.randn(t.shape, generator=gen, dtype=t.dtype) for k, t in op.like.items()}
    for _ in range(7):
        hv = op.matvec(v)
        lam = float(tree.dot(v, hv) / tree.dot(v, v))
        v = tree.scale(hv, 1.0 / float(tree.norm(hv)))
    fixed = linalg.power_iteration(op, iterations=7, seed=1)
    assert float(fixed.eigenvalues[0]) == lam and fixed.status is linalg.Status.MAX_ITERATIONS
    with pytest.warns(SolverWarning, match="power_iteration"):
        linalg.power_iteration(op, iterations=3, tol=1e-12)


def test_float32_operators():
    a = _symmetric(SPECTRA["separated"]).to(torch.float32)
    res = linalg.eigsh(linalg.LinearOperator.from_matrix(a), k=2)
    assert res.eigenvalues.dtype == torch.float32 and res.status is linalg.Status.CONVERGED
    torch.testing.assert_close(res.eigenvalues, torch.tensor([20.0, 15.0]), atol=1e-3, rtol=0)


def test_errors_and_non_convergence():
    a = _symmetric(SPECTRA["clustered"])
    op = _as_tree_operator(a)
    with pytest.raises(UnsupportedError, match="linalg.eigs"):
        linalg.eigsh(_as_tree_operator(_general()), k=1)
    with pytest.raises(InvalidArgumentError, match="which"):
        linalg.eigsh(op, which="LR")
    with pytest.raises(InvalidArgumentError, match="k=200 exceeds"):
        linalg.eigsh(op, k=200)
    with pytest.raises(InvalidArgumentError, match="krylov_size=4 is too small"):
        linalg.eigsh(op, k=4, krylov_size=4)
    with pytest.raises(InvalidArgumentError, match="v0 is zero"):
        linalg.eigsh(op, v0=tree.zeros_like(op.like))
    with pytest.raises(SolverDivergedError, match="eigsh: 0 of 3 eigenpairs converged"):
        linalg.eigsh(op, k=3, max_restarts=0, tol=1e-14, throw=True)
    with pytest.warns(SolverWarning, match="converged"):
        res = linalg.eigsh(op, k=3, max_restarts=0, tol=1e-14)
    assert res.status is linalg.Status.MAX_ITERATIONS and not bool(res.converged.all())
    assert res.as_dict()["status"] == "max_iterations"
