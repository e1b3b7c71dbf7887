"""Game.jacobian_operator and Game.spectrum against the dense Jacobian; Game.from_modules against a hand-written game."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nestopt import games, linalg, tree
from nestopt.errors import InvalidArgumentError, TooLargeError
from nestopt.games import zoo

D = torch.float64


def _nonlinear_game() -> games.Game:
    g = torch.Generator().manual_seed(1)
    p = [{"a": torch.randn(3, generator=g, dtype=D)}, {"b": torch.randn(2, 2, generator=g, dtype=D)}]

    def l0(q, _):
        return (q[0]["a"][:2] @ q[1]["b"]).tanh().sum() + (q[0]["a"] ** 2).sum()

    def l1(q, _):
        return -(q[0]["a"][1:] @ q[1]["b"]).sin().sum() + 0.5 * (q[1]["b"] ** 2).sum() * q[0]["a"].exp().sum()

    return games.Game(p, [l0, l1], names=["p", "q"])


def test_the_operator_is_the_dense_jacobian():
    game = _nonlinear_game()
    op = game.jacobian_operator()
    jac = game.jacobian()
    assert not op.symmetric and op.has_transpose and list(op.like) == list(game.state)
    torch.testing.assert_close(linalg.materialize(op), jac, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(linalg.materialize(op.T), jac.T, rtol=1e-12, atol=1e-12)
    v = tree.unflatten(torch.linspace(-1.0, 1.0, game.numel, dtype=D), tree.flatten(game.state)[1])
    torch.testing.assert_close(tree.flatten(op.matvec(v))[0], jac @ tree.flatten(v)[0])
    torch.testing.assert_close(tree.flatten(game.vjp(v))[0], jac.T @ tree.flatten(v)[0])  # joint trees in and out
    before = game.counter.hvps
    op.matvec(v), op.rmatvec(v)
    assert game.counter.hvps == before + 2


def test_a_linear_solve_with_the_game_jacobian():
    game = _nonlinear_game()
    op = game.jacobian_operator()
    rhs = tree.ones_like(game.state)
    expected = torch.linalg.solve(game.jacobian(), tree.flatten(rhs)[0])
    for solver in (linalg.GMRES(tol=1e-12), linalg.BiCGSTAB(tol=1e-12), linalg.Exact()):
        torch.testing.assert_close(tree.flatten(solver.solve(op, rhs).value)[0], expected, rtol=1e-9, atol=1e-10)


def test_dense_spectrum_matches_the_closed_form():
    sigma = torch.linspace(0.25, 4, 7, dtype=D)
    game = zoo.mixture(0.75, torch.diag(sigma), init=1.0)
    got = game.spectrum()
    expected = torch.cat([sigma * complex(0.25, 0.75), sigma * complex(0.25, -0.75)])
    assert got.shape == (14,) and bool((got.abs()[:-1] >= got.abs()[1:] - 1e-12).all())  # by decreasing magnitude
    for z in expected:
        assert float((got - z).abs().min()) < 1e-10
    top = game.spectrum(k=2, which="LR")  # small: eigs solves it densely
    torch.testing.assert_close(top.real, torch.full((2,), 1.0, dtype=D))
    torch.testing.assert_close(top.imag.abs(), torch.full((2,), 3.0, dtype=D))


def test_spectrum_of_a_large_game_by_arnoldi():
    sigma = torch.linspace(0.5, 2.0, 100, dtype=D)
    game = zoo.mixture(0.9, torch.diag(sigma), init=1.0)  # 200 parameters: Arnoldi, not the dense path
    got = game.spectrum(k=4, which="LM", tol=1e-10)
    expected = 2.0 * complex(0.1, 0.9)  # the largest |sigma ((1 - g) +- i g)|
    assert float((got[:2] - torch.tensor([expected, expected.conjugate()], dtype=torch.complex128)).abs().max()) < 1e-8
    dense = torch.linalg.eigvals(game.jacobian())
    for z in got:
        assert float((dense - z).abs().min()) < 1e-8
    with pytest.raises(TooLargeError, match="pass k="):
        game.spectrum(max_size=100)


class _Generator(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        self.register_buffer("offset", torch.tensor([0.5, -0.5]))
        self.frozen = torch.nn.Parameter(torch.tensor(2.0), requires_grad=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.frozen * self.net(z) + self.offset


def _gan_losses(nets, batch):
    real, z = batch
    fake = nets["generator"](z)
    d_real, d_fake = nets["discriminator"](real), nets["discriminator"](fake)
    penalty = 1e-2 * sum((w**2).sum() for w in nets.params("discriminator").values())
    return [F.softplus(-d_fake).mean(), F.softplus(-d_real).mean() + F.softplus(d_fake).mean() + penalty]


def _modules():
    torch.manual_seed(3)
    gen, disc = _Generator().double(), torch.nn.Linear(2, 1).double()
    g = torch.Generator().manual_seed(4)
    batch = (torch.randn(16, 2, generator=g, dtype=D), torch.randn(16, 3, generator=g, dtype=D))
    return gen, disc, batch


def _by_hand(gen, disc):
    """The same game written with explicit functional forwards (an independent path)."""

    def forward_g(p, z):
        h = torch.tanh(z @ p["net.0.weight"].T + p["net.0.bias"])
        return 2.0 * (h @ p["net.2.weight"].T + p["net.2.bias"]) + torch.tensor([0.5, -0.5], dtype=D)

    def losses(p, batch):
        real, z = batch
        fake = forward_g(p[0], z)
        d = lambda x: x @ p[1]["weight"].T + p[1]["bias"]
        penalty = 1e-2 * ((p[1]["weight"] ** 2).sum() + (p[1]["bias"] ** 2).sum())
        return [F.softplus(-d(fake)).mean(), F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean() + penalty]

    params = [{k: v.detach().clone() for k, v in m.named_parameters() if v.requires_grad} for m in (gen, disc)]
    return games.Game(params, losses, names=["generator", "discriminator"])


@pytest.mark.parametrize("per_player", [False, True])
def test_from_modules_matches_the_game_written_by_hand(per_player):
    gen, disc, batch = _modules()
    losses = _gan_losses
    if per_player:
        losses = [lambda nets, b: _gan_losses(nets, b)[0], lambda nets, b: _gan_losses(nets, b)[1]]
    game = games.Game.from_modules({"generator": gen, "discriminator": disc}, losses)
    assert game.names == ["generator", "discriminator"]
    assert "generator/frozen" not in game.state and game.state["discriminator/weight"] is disc.weight
    reference = _by_hand(gen, disc)
    got, want = game.value_and_xi(batch=batch), reference.value_and_xi(batch=batch)
    torch.testing.assert_close(torch.stack(got[0]), torch.stack(want[0]))
    torch.testing.assert_close(game.flatten(got[1]), reference.flatten(want[1]))
    torch.testing.assert_close(game.jacobian(batch=batch), reference.jacobian(batch=batch))
    # stepping the game trains the modules in place
    weight = disc.weight.detach().clone()
    game.step(torch.optim.SGD(game.parameters(), lr=0.1), batch=batch)
    torch.testing.assert_close(disc.weight.detach(), weight - 0.1 * want[1]["discriminator/weight"])


def test_from_modules_errors():
    gen, disc, batch = _modules()
    game = games.Game.from_modules({"g": gen, "d": disc}, lambda nets, b: [nets["generator"](b[1]).sum()] * 2)
    with pytest.raises(InvalidArgumentError, match="no player named 'generator'"):
        game.losses(batch=batch)
    with pytest.raises(InvalidArgumentError, match="nn.Module"):
        games.Game.from_modules({"g": gen, "d": lambda x: x}, _gan_losses)
    with pytest.raises(InvalidArgumentError, match="2 callables"):
        games.Game.from_modules({"g": gen, "d": disc}, [_gan_losses])
