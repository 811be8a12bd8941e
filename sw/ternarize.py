"""Ternarization {-alpha, 0, +alpha} (He, Gong, Fan, WACV'19 — the default of papers.md §2).

For a float weight matrix W (N x K, or any tensor whose first axis is the output channel)::

    delta = delta_factor * max|W|                       (one threshold per layer, default factor 0.05)
    t     = sign(w) * [|w| >= delta]                    (codes in {-1, 0, +1})
    alpha = mean(|w| : |w| >= delta)                    (per layer, or per output channel)
    w_t   = alpha * t

Training uses the straight-through estimator: the forward pass sees ``w_t``, the gradient flows to
the latent float ``w`` unchanged (``w + (w_t - w).detach()``). Pruned weights are held at zero by a
mask, which the ternarizer respects (a masked weight is never revived by ``t``).

The integer model keeps only ``t``; ``alpha`` becomes the layer's per-channel weight scale, which the
quantizer folds into the requantization multiplier (``mult * 2**-shift ~ s_in * alpha / s_out``), so
the hardware never multiplies by a weight.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import SparsynError

#: Default threshold factor: delta = 0.05 * max|W|.
DEFAULT_DELTA_FACTOR = 0.05


def check_delta_factor(factor: float) -> None:
    """Delta must be a positive fraction of max|W| (a factor >= 1 keeps only the largest weight)."""
    if not (isinstance(factor, (int, float)) and np.isfinite(factor) and 0 < factor < 1):
        raise SparsynError(f"ternary threshold factor delta={factor!r} must be in (0, 1) "
                           f"(delta = factor * max|W|); use the default {DEFAULT_DELTA_FACTOR}")


def ternarize(w: np.ndarray, delta_factor: float = DEFAULT_DELTA_FACTOR, per_channel: bool = False,
              name: str = "layer") -> tuple[np.ndarray, np.ndarray]:
    """Float N x K (or N x ...) -> (int64 codes in {-1,0,1} of the same shape, alpha per channel (N,)).

    With ``per_channel=False`` every entry of alpha is the layer's one alpha. A channel without a
    surviving weight gets the layer alpha (its codes are all zero, so the value is irrelevant to the
    output; it only has to be a positive scale for the requantizer). Refuses an all-zero layer.
    """
    check_delta_factor(delta_factor)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim < 2:
        raise SparsynError(f"layer '{name}': ternarize needs an N x K weight matrix, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise SparsynError(f"layer '{name}' has non-finite weights; retrain or reload the model")
    flat = w.reshape(w.shape[0], -1)
    amax = np.abs(flat).max()
    if amax == 0:
        raise SparsynError(f"layer '{name}' has only zero weights, so every PE tile would be pruned and the "
                           "model would be dead; lower the target sparsity or keep this layer dense")
    delta = delta_factor * amax
    keep = np.abs(flat) >= delta
    codes = (np.sign(flat) * keep).astype(np.int64)
    layer_alpha = np.abs(flat[keep]).mean()
    if per_channel:
        cnt = keep.sum(axis=1)
        sums = (np.abs(flat) * keep).sum(axis=1)
        alpha = np.where(cnt > 0, sums / np.maximum(cnt, 1), layer_alpha)
    else:
        alpha = np.full(w.shape[0], layer_alpha)
    return codes.reshape(w.shape), alpha


def ternarize_torch(w: torch.Tensor, delta_factor: float, per_channel: bool) -> torch.Tensor:
    """Differentiable-by-STE ternary projection of a weight tensor (first axis = output channel)."""
    with torch.no_grad():
        flat = w.reshape(w.shape[0], -1)
        amax = flat.abs().max()
        if amax == 0:
            return torch.zeros_like(w)
        keep = flat.abs() >= delta_factor * amax
        t = torch.sign(flat) * keep
        mag = flat.abs() * keep
        if per_channel:
            cnt = keep.sum(1, keepdim=True)
            layer_alpha = mag.sum() / keep.sum()
            alpha = torch.where(cnt > 0, mag.sum(1, keepdim=True) / cnt.clamp(min=1), layer_alpha)
        else:
            alpha = mag.sum() / keep.sum()
        wt = (alpha * t).reshape(w.shape)
    return w + (wt - w).detach()


class TernarySTE(nn.Module):
    """A ``torch.nn.utils.parametrize`` parametrization: forward weight = ternarize(latent weight)."""

    def __init__(self, delta_factor: float = DEFAULT_DELTA_FACTOR, per_channel: bool = False):
        super().__init__()
        self.delta_factor = delta_factor
        self.per_channel = per_channel

    def forward(self, w):
        return ternarize_torch(w, self.delta_factor, self.per_channel)


def attach_ste(module: nn.Module, delta_factor: float, per_channel: bool) -> None:
    """Make ``module.weight`` ternary in the forward pass (latent float weight trained by STE)."""
    from torch.nn.utils import parametrize
    parametrize.register_parametrization(module, "weight", TernarySTE(delta_factor, per_channel))


def detach_ste(module: nn.Module) -> None:
    """Remove the parametrization, leaving the ternarized values alpha * t as the plain weight."""
    from torch.nn.utils import parametrize
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def random_ternary_layer(rng: np.random.Generator, kind: str, cin: int, h: int, w: int, cout: int,
                         kernel=3, stride: int = 1, padding: int = 0, relu: bool = True, *,
                         tile: int = 8, cols: int = 4, occupancy: float = 0.5, density: float = 0.7,
                         name: str | None = None):
    """A random integer layer with weights in {-1, 0, 1} and random PE-tile occupancy (test fixture).

    Geometry as :func:`sparsyn.sw.testing.random_quant_layer`; each (cols x tile) group is kept with
    probability ``occupancy`` (at least one is kept), each weight of a kept group is nonzero with
    probability ``density``; requantization is spread over the int8 range.
    """
    from .group_prune import GroupGrid
    from .testing import random_quant_layer

    layer = random_quant_layer(rng, kind, cin, h, w, cout, kernel, stride, padding, relu, weight_bits=2,
                               name=name, scheme="ternary")
    wt = rng.choice(np.array([-1, 1]), size=layer.weight.shape) * (rng.random(layer.weight.shape) < density)
    grid = GroupGrid(layer.n, layer.k, cols, tile)
    keep = rng.random((grid.sections, grid.tiles)) < occupancy
    keep.flat[rng.integers(keep.size)] = True
    wt = wt * grid.expand(keep)
    if not wt.any():
        wt[0, 0] = 1
    layer.weight = wt.astype(np.int64)
    return layer
