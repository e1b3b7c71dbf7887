import pytest
import torch

from nestopt import tree
from nestopt.errors import NonFiniteError, ShapeMismatchError


def _pair():
    a = {"w": torch.randn(3, 2, dtype=torch.float64), "b": torch.randn(2, dtype=torch.float64)}
    b = {"w": torch.randn(3, 2, dtype=torch.float64), "b": torch.randn(2, dtype=torch.float64)}
    return a, b


def _vec(t):
    return tree.flatten(t)[0]


def test_arithmetic_matches_flat_vectors():
    a, b = _pair()
    va, vb = _vec(a), _vec(b)
    assert torch.allclose(_vec(tree.add(a, b)), va + vb)
    assert torch.allclose(_vec(tree.sub(a, b)), va - vb)
    assert torch.allclose(_vec(tree.scale(a, 3.0)), 3 * va)
    assert torch.allclose(_vec(tree.axpy(-2.0, a, b)), -2 * va + vb)
    assert torch.allclose(tree.dot(a, b), va @ vb)
    assert torch.allclose(tree.norm(a), va.norm())


def test_fused_and_autograd_paths_agree():
    a, b = _pair()
    ag = {k: v.clone().requires_grad_(True) for k, v in a.items()}
    assert torch.allclose(_vec(tree.axpy(0.5, ag, b)).detach(), _vec(tree.axpy(0.5, a, b)))
    tree.norm(ag).backward()
    assert torch.allclose(_vec({k: v.grad for k, v in ag.items()}), _vec(a) / _vec(a).norm())


def test_works_under_vmap():
    a, _ = _pair()
    batched = {k: torch.stack([v, 2 * v]) for k, v in a.items()}
    norms = torch.func.vmap(tree.norm)(batched)
    assert torch.allclose(norms, torch.stack([tree.norm(a), 2 * tree.norm(a)]))


def test_flatten_roundtrip_and_batched_unflatten():
    a, _ = _pair()
    vec, spec = tree.flatten(a)
    back = tree.unflatten(vec, spec)
    assert all(torch.equal(back[k], a[k]) for k in a)
    batch = tree.unflatten(torch.stack([vec, vec]), spec)
    assert batch["w"].shape == (2, 3, 2)


def test_check_like_names_the_problem():
    a, _ = _pair()
    with pytest.raises(ShapeMismatchError, match="only in params: \\['b'\\]"):
        tree.check_like(a, {"w": a["w"]}, "params", "v")
    with pytest.raises(ShapeMismatchError, match="shape"):
        tree.check_like(a, {"w": a["w"], "b": torch.zeros(5)}, "params", "v")
    with pytest.raises(ShapeMismatchError, match="unflatten|spec"):
        tree.unflatten(torch.zeros(3), tree.flatten(a)[1])


def test_check_finite():
    with pytest.raises(NonFiniteError, match="grads\\['x'\\]"):
        tree.check_finite({"x": torch.tensor([1.0, float("nan")])}, "grads")
