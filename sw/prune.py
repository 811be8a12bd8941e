"""Unstructured magnitude pruning with masked fine-tuning: two schedules.

* :func:`iterative_prune` **[ours]** (``tight``): the kept fraction goes geometrically from 1 to
  ``density`` in ``steps`` steps (``d_i = density ** (i / steps)``); at each step every compressed
  layer keeps its ``d_i`` largest-magnitude weights (per layer, so every layer ends at the same
  density), then the model is fine-tuned ``epochs`` epochs with the masks held
  (``sparsyn.sw.train.train(..., masks=)``). Test accuracy is logged after every step and returned.
* :func:`joint_prune` (``packcnn``, the PackCNN original's flow, ``train.py`` + ``util.prune`` +
  ``packing.pack_model`` of BradMcDanel/column-combine): the pruned fraction of each layer follows the
  **cubic schedule** :func:`cubic_schedule` up to that layer's final fraction, and at *every* step the
  mask is rebuilt from magnitudes, a ``combine`` callback (column combining + conflict pruning) removes
  more weights, and the model is retrained with the mask. The magnitudes the mask is rebuilt from
  include the values conflict-pruned weights had when they were masked (kept aside, as the original
  keeps them in its ``_weight`` behind ``_mask``), so a conflict-pruned weight can come back at a later
  step; a magnitude-pruned weight is set to zero and never comes back (the original zeroes ``_weight``).
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


def keep_largest(w: torch.Tensor, keep: int) -> torch.Tensor:
    """0/1 mask (shape and dtype of ``w``) keeping the ``keep`` largest |w| (ties: lower flat index first)."""
    flat = w.detach().abs().flatten()
    keep = min(max(0, int(keep)), flat.numel())
    order = np.lexsort((np.arange(flat.numel()), -flat.double().numpy()))
    mask = torch.zeros(flat.numel(), dtype=w.dtype)
    mask[torch.as_tensor(order[:keep], dtype=torch.int64)] = 1
    return mask.reshape(w.shape)


def magnitude_mask(w: torch.Tensor, density: float) -> torch.Tensor:
    """0/1 mask keeping the ``ceil(density * size)`` largest |w| (ties: lower flat index first)."""
    return keep_largest(w, max(1, math.ceil(density * w.numel() - 1e-9)))


def cubic_schedule(steps: int) -> list[float]:
    """Fraction of the final pruning reached after each of ``steps`` steps: ``1 - (1 - i/steps)**3``,
    i = 1..steps (the last is exactly 1). Fast at first, slow at the end (Zhu & Gupta's gradual pruning).

    The original (``train.py``) lists ``rate_max * (1 - (1 - i/10)**3)`` for i = 0..9 with the last
    entry set to ``rate_max``, and applies them at ``linspace(0, epochs/2, 10)``; its 1-based epoch loop never
    meets epoch 0, so it applies entries 0..8 (0, 0.271, ..., 0.992 of ``rate_max``). We apply the
    ``steps`` nonzero points, ending at the final fraction."""
    if steps < 1:
        raise SparsynError("the pruning schedule needs at least one step; use prune_steps >= 1")
    return [1.0 - (1.0 - i / steps) ** 3 for i in range(1, steps + 1)]


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


def joint_prune(model: nn.Module, data, final_prune: dict[str, float], steps: int, epochs: int,
                combine, lr: float = 1e-3, log=print, progress: bool = True, desc: str = "step",
                seed: int = 0) -> list[dict]:
    """The PackCNN joint schedule (module docstring): ``steps`` steps of magnitude pruning -> ``combine``
    -> masked retraining, for the layers named in ``final_prune`` (name -> final pruned fraction of the
    layer's weights, in [0, 1)).

    At step i (fraction f_i of :func:`cubic_schedule`) each layer's weights are, first, brought together
    with the values kept aside for its masked entries; the ``ceil(f_i * final * size)`` smallest
    magnitudes are pruned (set to zero for good); ``combine(name, w)`` gets the pruned N x K float
    matrix (numpy) and returns ``(keep, info)``: a bool N x K matrix of the weights that survive
    combining (False = conflict-pruned: masked, value kept aside) and a dict of figures for the history;
    then every layer is retrained ``epochs`` epochs with its mask (``epochs = 0``: evaluated only;
    ``seed``: the batch order of :func:`.train.train`).

    Returns one record per step: ``{"step", "schedule" (f_i), "accuracy" (test, %), "layers": {name:
    {"prune_fraction", "density" (kept by magnitude), "nonzero" (after combining), "conflict_pruned",
    "returned" (weights conflict-pruned before that are active again), **info}}}``.
    """
    from .train import accuracy, train
    mods = dict(model.named_modules())
    for name, frac in final_prune.items():
        if not 0 <= frac < 1:
            raise SparsynError(f"pruning: the final pruned fraction of layer {name} must be in [0, 1), not {frac}")
    latent = {n: mods[n].weight.data.detach().clone() for n in final_prune}   # the original's _weight
    active = {n: torch.ones_like(latent[n]) for n in final_prune}             # the original's _mask
    history = []
    for i, f in enumerate(cubic_schedule(steps), 1):
        rec = {"step": i, "schedule": f, "layers": {}}
        masks = {}
        for n, final in final_prune.items():
            w = mods[n].weight
            # trained values where active, the values kept aside where masked (0 where magnitude-pruned)
            lat = torch.where(active[n] != 0, w.data, latent[n])
            aside = (active[n] == 0) & (lat != 0)
            numel = lat.numel()
            prune = f * final
            keep = numel - math.ceil(prune * numel - 1e-9)
            lat = lat * keep_largest(lat, keep)
            keep_c, info = combine(n, lat.reshape(lat.shape[0], -1).double().numpy())
            keep_c = torch.as_tensor(np.asarray(keep_c, dtype=bool)).reshape(lat.shape) & (lat != 0)
            mask = keep_c.to(lat.dtype)
            latent[n], active[n] = lat, mask
            with torch.no_grad():
                w.copy_(lat * mask)
            masks[f"{n}.weight"] = mask
            nnz = int((lat != 0).sum())
            rec["layers"][n] = {"prune_fraction": prune, "density": keep / numel, "nonzero": int(keep_c.sum()),
                                "conflict_pruned": nnz - int(keep_c.sum()),
                                "returned": int((aside & keep_c).sum()), **info}
        if epochs > 0:
            acc = train(model, data, epochs=epochs, lr=lr, masks=masks, desc=f"{desc} {i}/{steps}",
                        progress=progress, seed=seed)
        else:
            acc = accuracy(model, data.test_x, data.test_y)
        rec["accuracy"] = acc
        history.append(rec)
        parts = ", ".join(f"{n} d={r['density']:.3f} -{r['conflict_pruned']}"
                          + (f" +{r['returned']} back" if r["returned"] else "") for n, r in rec["layers"].items())
        log(f"  {desc} {i}/{steps} ({100 * f:.1f} % of the final pruning): {parts}; accuracy {acc:.2f} %")
    return history
