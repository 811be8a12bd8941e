"""Unstructured magnitude pruning with an iterative masked fine-tuning schedule.

Schedule **[ours]**: the kept fraction goes geometrically from 1 to ``density`` in ``steps`` steps
(``d_i = density ** (i / steps)``); at each step every compressed layer keeps its ``d_i`` largest-
magnitude weights (per layer, so every layer ends at the same density), then the model is fine-tuned
``epochs`` epochs with the masks held (``sparsyn.sw.train.train(..., masks=)``). Test accuracy is
logged after every step and returned.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .errors import SparsynError


def compute_layers(model: nn.Module, input_shape) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every Conv2d / Linear in forward order (the compute-layer index)."""
    from .importer import import_model
    mods = dict(model.named_modules())
    return [(l.name, mods[l.name]) for l in import_model(model, input_shape) if l.kind in ("conv", "linear")]


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The module's weight as an N x K view (torch flatten order, the QuantLayer K order)."""
    return module.weight.data.reshape(module.weight.shape[0], -1)


def magnitude_mask(w: torch.Tensor, density: float) -> torch.Tensor:
    """0/1 mask keeping the ``ceil(density * size)`` largest |w| (ties: lower flat index first)."""
    flat = w.detach().abs().flatten()
    keep = max(1, math.ceil(density * flat.numel() - 1e-9))
    order = np.lexsort((np.arange(flat.numel()), -flat.double().numpy()))
    mask = torch.zeros(flat.numel(), dtype=w.dtype)
    mask[torch.as_tensor(order[:keep])] = 1
    return mask.reshape(w.shape)


def check_density(density) -> str | None:
    if not (isinstance(density, (int, float)) and 0 < density <= 1):
        return "density must be in (0, 1] (the kept fraction of weights), e.g. density=0.25"
    return None


def masks_from_model(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Masks of the current zero pattern of the named layers' weights."""
    mods = dict(model.named_modules())
    return {f"{n}.weight": (mods[n].weight.data != 0).to(mods[n].weight.dtype) for n in names}


def iterative_prune(model: nn.Module, data, names: list[str], density: float, steps: int, epochs: int,
                    lr: float = 1e-3, log=print, progress: bool = True) -> list[dict]:
    """Prune the named layers to ``density`` over ``steps`` steps with masked fine-tuning.

    Returns one record per step: ``{"step", "density", "accuracy"}`` (test accuracy in %).
    """
    from .train import accuracy, train
    problem = check_density(density)
    if problem:
        raise SparsynError(f"pruning: {problem}")
    if steps < 1:
        raise SparsynError("pruning needs at least one step; use prune_steps >= 1")
    mods = dict(model.named_modules())
    history = []
    for i in range(1, steps + 1):
        d = density ** (i / steps)
        masks = {}
        for n in names:
            w = mods[n].weight
            m = magnitude_mask(w.data, d)
            with torch.no_grad():
                w.mul_(m)
            masks[f"{n}.weight"] = m
        if epochs > 0:
            acc = train(model, data, epochs=epochs, lr=lr, masks=masks, desc=f"prune {i}/{steps} d={d:.3f}",
                        progress=progress)
        else:
            acc = accuracy(model, data.test_x, data.test_y)
        history.append({"step": i, "density": d, "accuracy": acc})
        log(f"  prune step {i}/{steps}: density {d:.3f}, accuracy {acc:.2f} %")
    return history
