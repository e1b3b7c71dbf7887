"""STN layers: with U = 0 they are their base layers; otherwise they compute with the effective weight
W(h) = s W_e + diag(U h) W_h (checked against torch's own layers at that weight), per batch and per example."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nestopt.bestresponse import StnConv2d, StnLinear
from nestopt.errors import ShapeMismatchError, UnsupportedError


@pytest.mark.parametrize("h_shape", [(3,), (5, 3)])
def test_stn_linear_with_zero_gates_equals_its_base_layer(f64, h_shape):
    base = torch.nn.Linear(4, 6)
    layer = StnLinear.from_module(base, num_hparams=3, init_std=0.0)
    x = torch.randn(5, 4)
    assert torch.equal(layer(x, torch.randn(h_shape)), base(x))
    assert torch.equal(layer(x), base(x))  # no hyperparameter input: the base layer


@pytest.mark.parametrize("h_shape", [(2,), (3, 2)])
def test_stn_conv_with_zero_gates_equals_its_base_layer(f64, h_shape):
    base = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1, groups=1)
    layer = StnConv2d.from_module(base, num_hparams=2, init_std=0.0)
    x = torch.randn(3, 3, 9, 9)
    torch.testing.assert_close(layer(x, torch.randn(h_shape)), base(x), rtol=0, atol=1e-14)


def _perturbed(layer: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))


def test_stn_linear_computes_with_its_effective_weight(f64):
    layer = StnLinear(4, 6, num_hparams=3, generator=torch.Generator().manual_seed(1))
    _perturbed(layer)
    x, h = torch.randn(5, 4), torch.randn(3)
    w, b = layer.effective(h)
    torch.testing.assert_close(layer(x, h), F.linear(x, w, b))
    hs = torch.randn(5, 3)  # one input per example: row i uses W(h_i)
    rows = torch.stack([F.linear(x[i], *layer.effective(hs[i])) for i in range(5)])
    torch.testing.assert_close(layer(x, hs), rows)
    xs = torch.randn(5, 7, 4)  # sequences: the example's gates broadcast over its positions
    seq = torch.stack([F.linear(xs[i], *layer.effective(hs[i])) for i in range(5)])
    torch.testing.assert_close(layer(xs, hs), seq)


def test_stn_conv_computes_with_its_effective_weight(f64):
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)
    layer = StnConv2d.from_module(conv, num_hparams=2)
    _perturbed(layer)
    x, hs = torch.randn(3, 4, 6, 6), torch.randn(3, 2)
    ref = torch.cat([F.conv2d(x[i : i + 1], *layer.effective(hs[i]), padding=1, groups=2) for i in range(3)])
    torch.testing.assert_close(layer(x, hs), ref)


def test_gates_start_near_zero_and_scale_at_one():
    layer = StnLinear(8, 8, num_hparams=4, init_std=0.01, generator=torch.Generator().manual_seed(0))
    assert float(layer.scale.detach()) == 1.0 and 0 < float(layer.hyper.detach().abs().max()) < 0.05


def test_bad_layer_inputs_raise_named_errors():
    layer = StnLinear(4, 2, num_hparams=3)
    with pytest.raises(ShapeMismatchError, match="takes 3 hyperparameters"):
        layer(torch.randn(2, 4), torch.randn(2))
    with pytest.raises(ShapeMismatchError, match="hyperparameter inputs"):
        layer(torch.randn(2, 5, 4), torch.randn(3, 3))
    with pytest.raises(UnsupportedError, match="padding_mode"):
        StnConv2d(torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular"), num_hparams=1)
