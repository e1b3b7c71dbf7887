"""Differentiable games: n players, each with its own parameters and a loss of everyone's parameters.

Player :math:`i` has parameters :math:`\\theta_i` (a tree) and a loss :math:`L_i(\\theta_1, \\dots, \\theta_n)` that it
minimizes over :math:`\\theta_i` alone. The *simultaneous gradient* stacks each player's gradient of its own
loss, and the *game Jacobian* is its derivative:

.. math::

    \\xi(\\theta) = \\big(\\nabla_{\\theta_1} L_1, \\dots, \\nabla_{\\theta_n} L_n\\big), \\qquad
    J = \\nabla_\\theta \\xi = S + A, \\quad S = \\tfrac12 (J + J^\\top), \\quad A = \\tfrac12 (J - J^\\top),

    \\mathcal{H}(\\theta) = \\tfrac12 \\|\\xi(\\theta)\\|^2, \\qquad \\nabla \\mathcal{H} = J^\\top \\xi.

Block :math:`(i, j)` of :math:`J` is :math:`\\nabla_{\\theta_j} \\nabla_{\\theta_i} L_i`. The symmetric part :math:`S` is
the "potential" component, the antisymmetric part :math:`A` the rotational ("Hamiltonian") one.

**State.** The joint state is one tree, :attr:`Game.state`, keyed ``"player/name"`` (the prefix convention of
the hyperparameter families): ``{"x/x": ..., "y/y": ...}``, ``{"generator/w0": ..., "discriminator/w0": ...}``.
Its tensors are the game's own, stepped in place by the update schemes; :attr:`Game.params` views the same
tensors as one tree per player, and :meth:`Game.split` / :meth:`Game.join` convert between the two forms.
Every method taking ``params`` accepts either form. :meth:`Game.value_and_xi` returns the losses and
:math:`\\xi` as a joint tree; :meth:`Game.jacobian_operator` gives :math:`J` as a
:class:`~nestopt.linalg.LinearOperator` (``matvec`` :math:`Jv`, ``rmatvec`` :math:`J^\\top u`) and
:meth:`Game.spectrum` its eigenvalues.

Players' losses are ``loss_i(params, batch) -> scalar`` where ``params`` is the list of the players' trees
(``params[i]`` is player ``i``'s); or one joint function returning the n losses. :meth:`Game.from_modules`
builds a game from ``torch.nn.Module`` players. :mod:`nestopt.games.schemes` steps the players with any
``torch.optim`` optimizers, simultaneously or in turn.

Example:
    >>> import torch
    >>> from nestopt.games import Game
    >>> x, y = {"x": torch.tensor([1.0])}, {"y": torch.tensor([2.0])}
    >>> game = Game([x, y], [lambda p, b: (p[0]["x"] * p[1]["y"]).sum(),      # min_x  x*y
    ...                      lambda p, b: -(p[0]["x"] * p[1]["y"]).sum()],    # min_y -x*y
    ...             names=["x", "y"])
    >>> losses, xi = game.value_and_xi()
    >>> {k: v.item() for k, v in xi.items()}
    {'x/x': 2.0, 'y/y': -1.0}
    >>> torch.equal(game.jacobian(), torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
    True
    >>> game.spectrum().imag.tolist()   # a pure rotation: eigenvalues +-i
    [1.0, -1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from nestopt import linalg, tree
from nestopt.autodiff import Counter, check_loss_value
from nestopt.errors import InvalidArgumentError, TooLargeError, UnsupportedError
from nestopt.games import schemes
from nestopt.games.linearization import GameLinearization
from nestopt.games.modules import ModuleLoss, bind_losses, module_trees
from nestopt.games.state import JointState, Params
from nestopt.tree import Tree

__all__ = ["Game", "JointLoss", "Params", "PlayerLoss"]

PlayerLoss = Callable[[list[Tree], Any], Tensor]
"""``loss_i(params, batch) -> scalar``: ``params`` is the list of every player's tree."""

JointLoss = Callable[[list[Tree], Any], Sequence[Tensor]]
"""``losses(params, batch) -> [L_1, ..., L_n]``: all losses at once (when they share computation)."""

Vector = Params | Tensor


class Game(JointState):
    """A differentiable game: players' parameter trees and their losses.

    Args:
        params: the players' parameters: one tree (``dict[str, Tensor]``) per player, or one joint tree keyed
            ``"player/name"``. These tensors are the game's state: the update schemes step them in place,
            so build torch optimizers over :meth:`parameters`. No two players may share a tensor.
        losses: a sequence of n functions ``loss_i(params, batch) -> scalar`` (``params`` is the list of all
            players' trees), or one function returning all n losses.
        names: the players' names (default ``player0``, ``player1``, ..., or the prefixes of a joint tree);
            the prefixes of :attr:`state`'s keys. A name may not contain ``"/"``.
        equilibrium: a known equilibrium (either form), used by :meth:`distance`.
        info: anything else worth keeping with the game (payoff matrices, samplers, ...), kept as :attr:`info`.

    Attributes:
        state: the joint state, keyed ``"player/name"`` (the game's own tensors).
        params: the same tensors, one tree per player.
        equilibrium: the known equilibrium as a joint tree, or ``None``.
        counter: derivative evaluations so far: ``grads`` counts player gradients :math:`\\nabla_{\\theta_i} L_i`
            (a full :math:`\\xi` is ``n_players`` of them), ``hvps`` Jacobian-vector products.

    Raises:
        InvalidArgumentError: malformed trees, a wrong number of losses, or players sharing a tensor.
    """

    def __init__(
        self,
        params: Params,
        losses: Sequence[PlayerLoss] | JointLoss,
        *,
        names: Sequence[str] | None = None,
        equilibrium: Params | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(params, names)
        n = self.n_players
        if callable(losses):
            self._joint: JointLoss | None = losses
            self._losses: list[PlayerLoss] | None = None
        else:
            if len(losses) != n or not all(callable(f) for f in losses):
                raise InvalidArgumentError(f"losses must be {n} callables (one per player) or one joint callable")
            self._joint, self._losses = None, list(losses)
        self.equilibrium: Tree | None = None
        if equilibrium is not None:
            if not isinstance(equilibrium, Mapping) and len(equilibrium) != n:
                raise InvalidArgumentError(f"equilibrium must have one tree per player ({n}), got {len(equilibrium)}")
            self.equilibrium = tree.detach(self._joint_tree(equilibrium, "equilibrium"))
        self.info: dict[str, Any] = dict(info or {})
        self.counter = Counter()

    @classmethod
    def from_modules(
        cls,
        modules: Mapping[str, torch.nn.Module],
        losses: Sequence[ModuleLoss] | ModuleLoss,
        *,
        equilibrium: Params | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> Game:
        """A game whose players are ``torch.nn.Module`` s: each module's parameters are its player's tree.

        The losses receive the players as callables: ``losses(nets, batch) -> [L_1, ..., L_n]`` (or one
        ``loss_i(nets, batch)`` per player), where ``nets["name"](*args)`` runs that module through
        ``torch.func.functional_call`` with the parameters the game evaluates it at (and the module's own
        buffers), and ``nets.params("name")`` is that player's tree (for penalties). The modules'
        ``nn.Parameter`` tensors are the game's state, so stepping the game trains the modules in place; the
        modules run in whatever mode they are in (call ``.eval()`` to freeze batch-norm statistics).

        Args:
            modules: player name -> module, in player order.
            losses: one joint function or one function per player, as above.
            equilibrium, info: as in :class:`Game`.

        Example:
            >>> import torch
            >>> from torch.nn.functional import softplus
            >>> from nestopt.games import Game
            >>> G, D = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
            >>> def gan(nets, batch):
            ...     real, z = batch
            ...     fake = nets["generator"](z)
            ...     d_real, d_fake = nets["discriminator"](real), nets["discriminator"](fake)
            ...     return [softplus(-d_fake).mean(), softplus(-d_real).mean() + softplus(d_fake).mean()]
            >>> game = Game.from_modules({"generator": G, "discriminator": D}, gan)
            >>> sorted(game.state)
            ['discriminator/bias', 'discriminator/weight', 'generator/bias', 'generator/weight']
            >>> opt = torch.optim.SGD(game.parameters(), lr=0.1)
            >>> losses = game.step(opt, batch=(torch.randn(8, 2), torch.randn(8, 2)))  # steps G and D in place
            >>> game.spectrum(batch=(torch.randn(8, 2), torch.randn(8, 2))).shape
            torch.Size([9])
        """
        if not isinstance(modules, Mapping) or not modules:
            raise InvalidArgumentError(f"modules must be a non-empty mapping name -> nn.Module, got {modules!r}")
        names = [str(n) for n in modules]
        mods = list(modules.values())
        return cls(module_trees(mods, names), bind_losses(mods, names, losses, len(mods)), names=names,
                   equilibrium=equilibrium, info=info)  # fmt: skip

    # -- evaluation ---------------------------------------------------------------------------------------
    def _wanted(self, players: Sequence[int] | None) -> list[int]:
        if players is None:
            return list(range(self.n_players))
        for i in players:
            self.player_keys(i)  # validates the index
        return list(players)

    def evaluate(
        self, params: Params | None = None, batch: Any = None, *, players: Sequence[int] | None = None
    ) -> list[Tensor]:
        """The losses of ``players`` (default: all) at ``params``, with their autograd graphs.

        When each player has its own loss function only the requested ones are evaluated.

        Raises:
            NonFiniteError: naming the player whose loss is NaN or infinite.
        """
        trees = self.split(self._point(params))
        wanted = self._wanted(players)
        if self._losses is not None and len(wanted) < self.n_players:
            values = {i: self._losses[i](trees, batch) for i in wanted}
        else:
            every = (
                list(self._joint(trees, batch))
                if self._joint is not None
                else [f(trees, batch) for f in self._losses or []]
            )
            if len(every) != self.n_players:
                raise InvalidArgumentError(f"the joint loss returned {len(every)} values for {self.n_players} players")
            values = dict(enumerate(every))
        return [check_loss_value(values[i], f"the loss of player {self.names[i]!r}") for i in wanted]

    def losses(self, params: Params | None = None, batch: Any = None) -> list[Tensor]:
        """Every player's loss (detached)."""
        with torch.no_grad():
            return [v.detach() for v in self.evaluate(params, batch)]

    def value_and_xi(
        self, params: Params | None = None, batch: Any = None, *, players: Sequence[int] | None = None
    ) -> tuple[list[Tensor], Tree]:
        """The losses of ``players`` (default: all; detached) and the simultaneous gradient :math:`\\xi` as a
        joint tree, each player's block :math:`\\nabla_{\\theta_i} L_i` (zeros for players not asked for)."""
        point = {k: v.detach().requires_grad_(True) for k, v in self._point(params).items()}
        wanted = self._wanted(players)
        xi = {k: torch.zeros_like(v) for k, v in point.items()}
        with torch.enable_grad():
            losses = self.evaluate(point, batch, players=wanted)
            for n_done, (i, loss) in enumerate(zip(wanted, losses)):
                keys = self.player_keys(i)
                if loss.requires_grad:
                    got = torch.autograd.grad(loss, [point[k] for k in keys], allow_unused=True,
                                              retain_graph=n_done < len(wanted) - 1)  # fmt: skip
                    xi.update({k: g.detach() for k, g in zip(keys, got) if g is not None})
        self.counter.grads += len(wanted)
        return [v.detach() for v in losses], xi

    def xi(self, params: Params | None = None, batch: Any = None) -> list[Tree]:
        """The simultaneous gradient :math:`\\xi`, one tree per player (:meth:`value_and_xi` gives the joint tree)."""
        return self.split(self.value_and_xi(params, batch)[1])

    def player_grad(self, player: int, params: Params | None = None, batch: Any = None) -> Tree:
        """One block of :math:`\\xi`: :math:`\\nabla_{\\theta_i} L_i` for ``player`` :math:`i` (keys without prefix)."""
        keys = self.player_keys(player)
        xi = self.value_and_xi(params, batch, players=[player])[1]
        return {k: xi[key] for k, key in zip(self.params[player], keys)}

    def hamiltonian(self, params: Params | None = None, batch: Any = None) -> Tensor:
        """:math:`\\mathcal{H} = \\tfrac12 \\|\\xi\\|^2` (zero exactly at the game's fixed points)."""
        xi = self.value_and_xi(params, batch)[1]
        return 0.5 * sum((v * v).sum() for v in xi.values())  # type: ignore[return-value]

    # -- the Jacobian -------------------------------------------------------------------------------------
    def linearize(
        self, params: Params | None = None, batch: Any = None, *, what: str = "this method"
    ) -> GameLinearization:
        """The game at ``params`` as a :class:`~nestopt.games.GameLinearization` object: :math:`\\xi` with its
        graph kept, ready for Jacobian products (``what`` names the caller in error messages)."""
        return GameLinearization(self, self._point(params), batch, what)

    def jacobian_operator(self, params: Params | None = None, batch: Any = None) -> linalg.LinearOperator:
        """:math:`J` at ``params`` as a non-symmetric :class:`~nestopt.linalg.LinearOperator` on joint trees:
        ``matvec`` is :math:`Jv` (a double backward pass), ``rmatvec`` :math:`J^\\top u` (one backward pass).

        Example:
            >>> from nestopt import linalg
            >>> from nestopt.games import zoo
            >>> op = zoo.bilinear(dim=3, init=1.0).jacobian_operator()
            >>> op.symmetric, linalg.GMRES(tol=1e-6).solve(op, op.like).info.status.value
            (False, 'converged')
        """
        return self.linearize(params, batch, what="the game Jacobian operator").operator()

    def _product(self, v: Vector, params: Params | None, batch: Any, transpose: bool) -> Vector:
        joint = self.join(self.unflatten(v)) if isinstance(v, Tensor) else self._joint_tree(v, "v")
        lin = self.linearize(params, batch, what="vjp" if transpose else "jvp")
        out = lin.vjp(joint) if transpose else lin.jvp(joint)
        if isinstance(v, Tensor):
            return self.flatten(out)
        return out if isinstance(v, Mapping) else self.split(out)

    def jvp(self, v: Vector, params: Params | None = None, batch: Any = None) -> Vector:
        """:math:`J v`; ``v`` is a joint tree, one tree per player or a flat vector, and the result has the same form."""
        return self._product(v, params, batch, transpose=False)

    def vjp(self, u: Vector, params: Params | None = None, batch: Any = None) -> Vector:
        """:math:`J^\\top u`; ``u`` is a joint tree, one tree per player or a flat vector, and the result has the same form."""
        return self._product(u, params, batch, transpose=True)

    def jacobian(self, params: Params | None = None, batch: Any = None, *, max_size: int = 4096) -> Tensor:
        """The dense game Jacobian :math:`J` (``numel x numel``), rows and columns in :meth:`flatten` order.

        Raises:
            TooLargeError: when the game has more than ``max_size`` parameters (use :meth:`jacobian_operator`).
        """
        return self.linearize(params, batch, what="the dense game Jacobian").jacobian(max_size)

    def decompose(
        self, params: Params | None = None, batch: Any = None, *, max_size: int = 4096
    ) -> tuple[Tensor, Tensor]:
        """The symmetric and antisymmetric parts :math:`(S, A)` of the dense Jacobian."""
        jac = self.jacobian(params, batch, max_size=max_size)
        return 0.5 * (jac + jac.T), 0.5 * (jac - jac.T)

    def spectrum(
        self,
        params: Params | None = None,
        batch: Any = None,
        k: int | None = None,
        *,
        which: str = "LM",
        max_size: int = 4096,
        tol: float | None = None,
        seed: int | torch.Generator = 0,
    ) -> Tensor:
        """Eigenvalues of the game Jacobian (complex).

        With ``k=None``, all of them from the dense Jacobian (at most ``max_size`` parameters), by decreasing
        magnitude. With ``k``, the ``k`` selected by ``which`` (``"LM"``, ``"LR"``, ``"SR"``, ``"LI"``, ...)
        from :func:`nestopt.linalg.eigs` on :meth:`jacobian_operator`: Arnoldi for large games, a dense
        solve when the Krylov space would fill the whole space anyway. Eigenvalues with negative real part
        repel simultaneous gradient descent; purely imaginary ones make it rotate.

        Args:
            params, batch: the point and the batch (default: the current state, no batch).
            k: how many eigenvalues (``None``: all, densely).
            which: which ``k`` (see :func:`nestopt.linalg.eigs`).
            max_size: the largest game for the dense path.
            tol, seed: passed to :func:`nestopt.linalg.eigs`.

        Example:
            >>> from nestopt.games import zoo
            >>> game = zoo.mixture(0.5, zoo.spread_spectrum(40, 1.0, 4.0), init=1.0)  # sigma_k (1 +- i) / 2
            >>> [complex(round(z.real, 6), round(z.imag, 6)) for z in game.spectrum(k=1, which="LI").tolist()]
            [(2+2j)]
        """
        if k is None:
            if self.numel > max_size:
                raise TooLargeError(
                    f"the game has {self.numel} parameters, more than max_size={max_size} for a dense spectrum; "
                    "pass k= for the k extreme eigenvalues by Arnoldi iteration"
                )
            values = torch.linalg.eigvals(self.jacobian(params, batch, max_size=max_size))
            return values[torch.argsort(-values.abs(), stable=True)]
        return linalg.eigs(self.jacobian_operator(params, batch), k, which=which, tol=tol, seed=seed).eigenvalues

    def distance(self, params: Params | None = None) -> float:
        """The Euclidean distance from ``params`` (default: the current state) to :attr:`equilibrium`."""
        if self.equilibrium is None:
            raise UnsupportedError("this game has no known equilibrium; pass equilibrium= when building it")
        return float((self.flatten(params) - self.flatten(self.equilibrium)).norm())

    def step(
        self,
        optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        *,
        scheme: str = "simultaneous",
        rule: Any = None,
        batch: Any = None,
    ) -> list[Tensor]:
        """One step of every player (:func:`nestopt.games.schemes.step`); returns the losses it saw."""
        return schemes.step(self, optimizers, scheme=scheme, rule=rule, batch=batch)

    def __repr__(self) -> str:
        players = ", ".join(f"{n}: {s}" for n, s in zip(self.names, self.sizes))
        return f"Game({players})"
