"""ENAS's controller: an LSTM that samples a cell's tokens one after another (Pham et al., 2018).

From :math:`h_0 = 0` and a zero first input, step :math:`t` runs the LSTM cell, turns its hidden state into
logits for token :math:`t` with its own linear decoder, shaped as in ENAS,

.. math::  \\ell_t = c \\tanh\\big(D_t h_t / T\\big) \\qquad (T: \\text{temperature},\\ c: \\text{tanh constant}),

samples the token from :math:`\\mathrm{softmax}(\\ell_t)` and feeds its embedding as the next input, so each
decision may condition on every earlier one. A :class:`Rollout` carries the sequences, their log-probability
:math:`\\log \\pi(a) = \\sum_t \\log \\pi_t(a_t | a_{<t})`, the summed per-step entropies
:math:`\\sum_t H(\\pi_t(\\cdot | a_{<t}))` (both differentiable), and the **hidden state after the whole
architecture** (the LSTM run once more on the last token's embedding): the controller's embedding of the
cell, which Adam & Lorraine (2019) analyse.

Every parameter starts uniform in ``[-init_range, init_range]`` and the decoders' biases at zero, as in ENAS.

Example:
    >>> import torch
    >>> from nestopt import nas
    >>> space = nas.CellSpace(nodes=3, ops=("tanh", "relu"))
    >>> ctrl = nas.Controller(space, hidden=16, generator=torch.Generator().manual_seed(0))
    >>> out = ctrl.sample(4, generator=torch.Generator().manual_seed(1))
    >>> out.tokens.shape, out.hidden.shape, len(ctrl.architectures(out))
    (torch.Size([4, 5]), torch.Size([4, 16]), 4)
    >>> torch.allclose(ctrl.evaluate(out.tokens).log_prob, out.log_prob)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nestopt._validate import nonnegative, positive_int
from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.nas.space import Architecture, CellSpace

__all__ = ["Controller", "Rollout"]


@dataclass
class Rollout:
    """Architectures from a :class:`Controller` (sampled, or read by teacher forcing).

    Attributes:
        tokens: ``(n, 2N - 1)`` token sequences (:meth:`CellSpace.encode`).
        log_prob: ``(n,)`` log-probability of each sequence (differentiable).
        entropy: ``(n,)`` sum over the steps of the policy's entropy given the earlier tokens (differentiable).
        hidden: ``(n, hidden)`` the LSTM's hidden state after reading the whole sequence.
        probs: for every step, the ``(n, choices)`` policy given each sequence's earlier tokens (detached).
    """

    tokens: Tensor
    log_prob: Tensor
    entropy: Tensor
    hidden: Tensor
    probs: list[Tensor]

    def conditioning(self) -> float:
        """How much the policy depends on the earlier decisions: over the steps with a choice, the mean total
        variation distance between each sequence's step distribution and their average,
        :math:`\\overline{\\tfrac12 \\|\\pi_t(\\cdot | a^k_{<t}) - \\bar\\pi_t\\|_1}` (0 for a policy that ignores
        its past; at most 1)."""
        tv = [0.5 * (p - p.mean(0)).abs().sum(-1).mean() for p in self.probs if p.shape[-1] > 1]
        return float(torch.stack(tv).mean()) if tv else 0.0


class Controller(nn.Module):
    """An LSTM policy over a cell space's token sequences (see the module docstring).

    Args:
        space: the search space.
        hidden: the LSTM's width.
        temperature: the logits' temperature :math:`T` (ENAS: 5).
        tanh_constant: :math:`c`, bounding the logits to ``[-c, c]`` (ENAS: 2.5); ``None`` leaves them unbounded.
        init_range: the half-width of the uniform initialization (ENAS: 0.1).
        generator: draws the initialization (default: torch's global generator).
    """

    offsets: Tensor

    def __init__(
        self,
        space: CellSpace,
        hidden: int = 64,
        *,
        temperature: float = 5.0,
        tanh_constant: float | None = 2.5,
        init_range: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.space = space
        self.hidden_size = positive_int("hidden", hidden)
        self.temperature = nonnegative("temperature", temperature, positive=True)
        self.tanh_constant = (
            None if tanh_constant is None else nonnegative("tanh_constant", tanh_constant, positive=True)
        )
        init_range = nonnegative("init_range", init_range, positive=True)
        choices = space.choices
        self.register_buffer("offsets", torch.tensor([sum(choices[:t]) for t in range(len(choices))]), persistent=False)
        self.embedding = nn.Embedding(sum(choices), self.hidden_size)
        self.lstm = nn.LSTMCell(self.hidden_size, self.hidden_size)
        self.decoders = nn.ModuleList(nn.Linear(self.hidden_size, c) for c in choices)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.empty_like(p).uniform_(-init_range, init_range, generator=generator))
            for d in self.decoders:
                d.bias.zero_()  # type: ignore[operator]

    def step_logits(self, h: Tensor, t: int) -> Tensor:
        """The logits of token ``t`` given the hidden state ``h`` before it."""
        z = self.decoders[t](h) / self.temperature
        return z if self.tanh_constant is None else self.tanh_constant * torch.tanh(z)

    def _run(self, n: int, tokens: Tensor | None, generator: torch.Generator | None) -> Rollout:
        like = self.embedding.weight
        x = torch.zeros(n, self.hidden_size, dtype=like.dtype, device=like.device)
        state = (x, x)
        log_prob = torch.zeros(n, dtype=like.dtype, device=like.device)
        entropy = torch.zeros_like(log_prob)
        chosen, probs = [], []
        for t in range(self.space.num_tokens):
            state = self.lstm(x, state)
            logp = torch.log_softmax(self.step_logits(state[0], t), dim=-1)
            if tokens is None:
                probs_t = logp.detach().exp()
                if generator is not None and generator.device != probs_t.device:
                    probs_t = probs_t.cpu()  # a CPU generator draws on the CPU
                tok = torch.multinomial(probs_t, 1, generator=generator).squeeze(1).to(logp.device)
            else:
                tok = tokens[:, t]
            log_prob = log_prob + logp.gather(1, tok.unsqueeze(1)).squeeze(1)
            entropy = entropy - (logp.exp() * logp).sum(-1)
            chosen.append(tok)
            probs.append(logp.detach().exp())
            x = self.embedding(tok + self.offsets[t])
        hidden, _ = self.lstm(x, state)
        return Rollout(torch.stack(chosen, dim=1), log_prob, entropy, hidden, probs)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Rollout:
        """``n`` architectures sampled from the policy (autoregressively)."""
        return self._run(positive_int("n", n), None, generator)

    def evaluate(self, tokens: Tensor) -> Rollout:
        """The log-probabilities, entropies and hidden states of given token sequences (teacher forcing)."""
        if tokens.dim() != 2 or tokens.shape[1] != self.space.num_tokens or tokens.shape[0] < 1:
            raise ShapeMismatchError(
                f"tokens must have shape (n, {self.space.num_tokens}) with n >= 1, got {tuple(tokens.shape)}"
            )
        tokens = tokens.to(device=self.offsets.device, dtype=torch.long)
        limits = torch.tensor(self.space.choices, device=tokens.device)
        if bool(((tokens < 0) | (tokens >= limits)).any()):
            raise InvalidArgumentError(f"every token must be below its number of choices {self.space.choices}")
        return self._run(tokens.shape[0], tokens, None)

    def architectures(self, rollout: Rollout) -> list[Architecture]:
        """The architectures of a rollout."""
        return self.space.from_tensor(rollout.tokens)
