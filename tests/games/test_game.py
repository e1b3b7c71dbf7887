"""The Game API: xi, the Jacobian and its products, the Hamiltonian, update schemes, bad input."""

from __future__ import annotations

import pytest
import torch

from nestopt import games, optim
from nestopt.errors import InvalidArgumentError, NonFiniteError, ShapeMismatchError, TooLargeError, UnsupportedError
from nestopt.games import zoo


def _nonlinear_game(dtype=torch.float64) -> games.Game:
    """Three players, two of them with two tensors each, non-quadratic losses."""
    g = torch.Generator().manual_seed(0)
    p = [
        {"a": torch.randn(2, generator=g, dtype=dtype), "b": torch.randn(2, 2, generator=g, dtype=dtype)},
        {"c": torch.randn(3, generator=g, dtype=dtype)},
        {"d": torch.randn(1, generator=g, dtype=dtype), "e": torch.randn(2, generator=g, dtype=dtype)},
    ]

    def l0(q, batch):
        return (q[0]["b"] @ q[0]["a"]).sin().sum() * q[1]["c"].sum() + (q[0]["a"] ** 2).sum() + q[2]["d"].sum() ** 3

    def l1(q, batch):
        return (q[1]["c"] * q[0]["a"].sum()).tanh().sum() + (q[1]["c"] ** 2).sum() * q[2]["e"].exp().sum()

    def l2(q, batch):
        return (q[2]["e"] * q[1]["c"][:2]).sum() ** 2 + q[2]["d"].sum() * q[0]["b"].sum() + (q[2]["d"] ** 4).sum()

    return games.Game(p, [l0, l1, l2], names=["p0", "p1", "p2"])


def _flat_xi_fn(game: games.Game):
    """xi as a function of the flat vector, through torch.autograd.functional (an independent path)."""

    def fn(vec: torch.Tensor) -> torch.Tensor:
        trees = game.unflatten(vec)
        out = []
        values = [f(trees, None) for f in game._losses] if game._losses else list(game._joint(trees, None))
        for i, loss in enumerate(values):
            own = list(trees[i].values())
            out += [g.reshape(-1) for g in torch.autograd.grad(loss, own, create_graph=True)]
        return torch.cat(out)

    return fn


def test_xi_matches_closed_form_on_bilinear() -> None:
    A = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]], dtype=torch.float64)
    game = zoo.bilinear(A, init=None, generator=torch.Generator().manual_seed(1))
    x, y = game.params[0]["x"], game.params[1]["y"]
    xi = game.xi()
    torch.testing.assert_close(xi[0]["x"], A @ y)
    torch.testing.assert_close(xi[1]["y"], -(A.T @ x))


def test_jacobian_matches_autograd_functional_and_products() -> None:
    game = _nonlinear_game()
    vec = game.flatten()
    expected = torch.autograd.functional.jacobian(_flat_xi_fn(game), vec)
    jac = game.jacobian()
    torch.testing.assert_close(jac, expected, rtol=1e-10, atol=1e-10)
    v = torch.randn(game.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(game.jvp(v), jac @ v, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(game.vjp(v), jac.T @ v, rtol=1e-10, atol=1e-10)
    # tree form round-trips too
    jv_tree = game.jvp(game.unflatten(v))
    torch.testing.assert_close(game.flatten(jv_tree), jac @ v, rtol=1e-10, atol=1e-10)


def test_jvp_matches_finite_differences() -> None:
    game = _nonlinear_game()
    vec = game.flatten()
    v = torch.randn(game.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    eps = 1e-6
    plus = game.flatten(game.xi(game.unflatten(vec + eps * v)))
    minus = game.flatten(game.xi(game.unflatten(vec - eps * v)))
    torch.testing.assert_close(game.jvp(v), (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-7)


def test_decompose_and_hamiltonian() -> None:
    game = _nonlinear_game()
    S, A = game.decompose()
    jac = game.jacobian()
    torch.testing.assert_close(S + A, jac)
    torch.testing.assert_close(S, S.T)
    torch.testing.assert_close(A, -A.T)
    xi = game.flatten(game.xi())
    torch.testing.assert_close(game.hamiltonian(), 0.5 * xi @ xi)
    # grad H = J^T xi, checked by central differences of H
    vec, eps = game.flatten(), 1e-6
    v = torch.randn(game.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    fd = (game.hamiltonian(game.unflatten(vec + eps * v)) - game.hamiltonian(game.unflatten(vec - eps * v))) / (2 * eps)
    torch.testing.assert_close(fd, (jac.T @ xi) @ v, rtol=1e-6, atol=1e-8)


def test_mixture_jacobian_eigenvalues_closed_form() -> None:
    sigma = torch.linspace(0.25, 4, 7, dtype=torch.float64)
    game = zoo.mixture(0.75, torch.diag(sigma), init=1.0)
    eig = torch.linalg.eigvals(game.jacobian())
    expected = torch.cat([sigma * complex(0.25, 0.75), sigma * complex(0.25, -0.75)])
    got = sorted(eig.tolist(), key=lambda z: (round(z.real, 8), z.imag))
    want = sorted(expected.tolist(), key=lambda z: (round(z.real, 8), z.imag))
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want))


def test_joint_and_per_player_losses_agree() -> None:
    game = zoo.dirac_gan(init=0.7, dtype=torch.float64)
    per_player = games.Game(
        [{k: v.clone() for k, v in t.items()} for t in game.params],
        [lambda p, b: game._joint(p, b)[0], lambda p, b: game._joint(p, b)[1]],
    )
    torch.testing.assert_close(game.jacobian(), per_player.jacobian())
    # closed form: xi = (-s(t) psi, s(t) theta) with t = psi * theta and s the logistic sigmoid
    th = ps = 0.7
    t = torch.tensor(th * ps, dtype=torch.float64)
    s, ds = torch.sigmoid(t), torch.sigmoid(t) * (1 - torch.sigmoid(t))
    expected = torch.stack([torch.stack([-ds * ps**2, -s - ds * ps * th]), torch.stack([s + ds * th * ps, ds * th**2])])
    torch.testing.assert_close(game.jacobian(), expected)


def test_dirac_gan_jacobian_at_equilibrium_is_a_rotation() -> None:
    game = zoo.dirac_gan(dtype=torch.float64)
    jac = game.jacobian(game.equilibrium)
    torch.testing.assert_close(jac, torch.tensor([[0.0, -0.5], [0.5, 0.0]], dtype=torch.float64))


def test_simultaneous_and_alternating_gda_written_out() -> None:
    lr = 0.1
    for scheme in ("simultaneous", "alternating"):
        game = zoo.bilinear(dim=1, init=1.0, dtype=torch.float64)
        opts = [torch.optim.SGD(game.parameters(i), lr=lr) for i in range(2)]
        x = y = 1.0
        for _ in range(5):
            game.step(opts, scheme=scheme)
            if scheme == "simultaneous":
                x, y = x - lr * y, y + lr * x
            else:
                x = x - lr * y
                y = y + lr * x  # the second player sees the first one's new x
        assert game.params[0]["x"].item() == pytest.approx(x, abs=1e-14)
        assert game.params[1]["y"].item() == pytest.approx(y, abs=1e-14)


def test_simultaneous_with_one_optimizer_equals_one_per_player() -> None:
    a = zoo.mixture(0.6, zoo.spread_spectrum(3, dtype=torch.float64), init=1.0)
    b = zoo.mixture(0.6, zoo.spread_spectrum(3, dtype=torch.float64), init=1.0)
    opt_a = optim.ComplexMomentum(a.parameters(), lr=0.1, beta=(0.7, 0.4))
    opt_b = [optim.ComplexMomentum(b.parameters(i), lr=0.1, beta=(0.7, 0.4)) for i in range(2)]
    for _ in range(10):
        a.step(opt_a)
        b.step(opt_b)
    torch.testing.assert_close(a.flatten(), b.flatten(), rtol=0, atol=0)


def test_extragradient_per_player_equals_joint() -> None:
    a = zoo.bilinear(dim=2, init=1.0, dtype=torch.float64)
    b = zoo.bilinear(dim=2, init=1.0, dtype=torch.float64)
    opt_a = optim.ExtraGradient(torch.optim.SGD(a.parameters(), lr=0.3))
    opt_b = [optim.ExtraGradient(torch.optim.SGD(b.parameters(i), lr=0.3)) for i in range(2)]
    for _ in range(10):
        a.step(opt_a)
        b.step(opt_b)
    torch.testing.assert_close(a.flatten(), b.flatten(), rtol=0, atol=1e-15)
    assert a.distance() < 2.0  # started at distance 2


def test_step_returns_losses_and_counts_gradients() -> None:
    game = zoo.bilinear(dim=1, init=2.0, dtype=torch.float64)
    opts = [torch.optim.SGD(game.parameters(i), lr=0.1) for i in range(2)]
    losses = game.step(opts)
    assert [float(v) for v in losses] == [4.0, -4.0]
    assert game.counter.grads == 2
    game.step(opts, scheme="alternating")
    assert game.counter.grads == 4


def test_players_sharing_a_tensor_are_refused() -> None:
    w = torch.zeros(3)
    with pytest.raises(InvalidArgumentError, match="players 'a' and 'b' share a parameter tensor"):
        games.Game([{"w": w}, {"v": w}], [lambda p, b: p[0]["w"].sum()] * 2, names=["a", "b"])
    base = torch.zeros(4)
    with pytest.raises(InvalidArgumentError, match="share"):
        games.Game([{"w": base[:3]}, {"v": base[2:]}], [lambda p, b: p[0]["w"].sum()] * 2)
    games.Game([{"w": base[:2]}, {"v": base[2:]}], [lambda p, b: p[0]["w"].sum()] * 2)  # disjoint views are fine


def test_non_finite_loss_names_the_player() -> None:
    game = games.Game(
        [{"x": torch.ones(1)}, {"y": torch.ones(1)}],
        [lambda p, b: p[0]["x"].sum(), lambda p, b: p[1]["y"].log().sum() * float("nan")],
        names=["good", "bad"],
    )
    with pytest.raises(NonFiniteError, match="player 'bad'"):
        game.xi()
    with pytest.raises(NonFiniteError, match="player 'bad'"):
        game.losses()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"params": [], "losses": []}, InvalidArgumentError, "one tree per player"),
        ({"params": [{"x": torch.ones(1)}], "losses": [None]}, InvalidArgumentError, "callables"),
        ({"params": [{"x": torch.ones(1)}, {"y": torch.ones(1)}], "losses": [lambda p, b: p]},
         InvalidArgumentError, "2 callables"),
        ({"params": [{"x": [1.0]}], "losses": [lambda p, b: p]}, InvalidArgumentError, "torch.Tensor"),
        ({"params": [{"x": torch.ones(1)}, {"y": torch.ones(1)}], "losses": [lambda p, b: p] * 2, "names": ["a", "a"]},
         InvalidArgumentError, "distinct"),
    ],
)  # fmt: skip
def test_bad_games(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        games.Game(**kwargs)


def test_loss_must_be_scalar_and_joint_count() -> None:
    game = games.Game([{"x": torch.ones(2)}], [lambda p, b: p[0]["x"]], names=["solo"])
    with pytest.raises(InvalidArgumentError, match="player 'solo'"):
        game.xi()
    joint = games.Game([{"x": torch.ones(1)}, {"y": torch.ones(1)}], lambda p, b: [p[0]["x"].sum()])
    with pytest.raises(InvalidArgumentError, match="1 values for 2 players"):
        joint.xi()


def test_dense_jacobian_size_limit_and_shapes() -> None:
    game = zoo.bilinear(dim=30, init=1.0)
    with pytest.raises(TooLargeError, match="jvp/vjp"):
        game.jacobian(max_size=50)
    with pytest.raises(ShapeMismatchError):
        game.jvp(torch.ones(7))
    with pytest.raises(ShapeMismatchError, match="keys"):
        game.xi([{"z": torch.ones(30)}, {"y": torch.ones(30)}])
    with pytest.raises(UnsupportedError, match="equilibrium"):
        zoo.tandem(init=0.0).distance()


def test_scheme_errors() -> None:
    game = zoo.bilinear(dim=1, init=1.0)
    joint = torch.optim.SGD(game.parameters(), lr=0.1)
    with pytest.raises(InvalidArgumentError, match="one optimizer per player"):
        game.step(joint, scheme="alternating")
    swapped = [torch.optim.SGD(game.parameters(1), lr=0.1), torch.optim.SGD(game.parameters(0), lr=0.1)]
    with pytest.raises(InvalidArgumentError, match="only player i"):
        game.step(swapped, scheme="alternating")
    stranger = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(InvalidArgumentError, match="not a parameter of the game"):
        game.step(stranger)
    with pytest.raises(InvalidArgumentError, match="scheme"):
        game.step(joint, scheme="sideways")
    with pytest.raises(UnsupportedError, match="mixing ExtraGradient"):
        game.step([optim.ExtraGradient(torch.optim.SGD(game.parameters(0), lr=0.1)),
                   torch.optim.SGD(game.parameters(1), lr=0.1)])  # fmt: skip
