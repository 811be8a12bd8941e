"""Float training / fine-tuning on CPU with a progress bar; masks keep pruned weights at zero."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Dataset


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> float:
    """Top-1 accuracy in percent; for data without labels (``y`` None: a model that reconstructs its input, e.g.
    an autoencoder) the **reconstruction score** in percent, ``100 * (1 - MSE / variance of x)`` (100: perfect,
    0: no better than the mean), so that the schemes' logs and histories read the same way."""
    model.eval()
    with torch.no_grad():
        if y is None:
            return 100.0 * (1.0 - reconstruction_mse(model(x), x) / max(float(x.double().var()), 1e-30))
        return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def reconstruction_mse(out: torch.Tensor, x: torch.Tensor) -> float:
    """Mean squared error between a model's output and its input ``x`` (both flattened per sample)."""
    return float(((out.reshape(len(x), -1).double() - x.reshape(len(x), -1).double()) ** 2).mean())


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy against the labels; without labels, the MSE of the reconstruction of ``x``."""
    out = model(x)
    if y is None:
        return nn.functional.mse_loss(out.reshape(len(x), -1), x.reshape(len(x), -1))
    return nn.functional.cross_entropy(out, y)


def train(model: nn.Module, data: Dataset, epochs: int = 30, lr: float = 3e-3, batch: int = 64,
          masks: dict[str, torch.Tensor] | None = None,
          penalty: Callable[[nn.Module], torch.Tensor] | None = None,
          after_step: Callable[[nn.Module], None] | None = None,
          desc: str = "train", seed: int = 0, progress: bool = True) -> float:
    """Adam + cross-entropy (data without labels: MSE of the reconstruction); returns test accuracy (%)
    (:func:`accuracy`).

    ``masks`` maps parameter names to 0/1 tensors re-applied after every step (pruned weights stay 0);
    ``penalty(model)`` is added to the loss (e.g. group lasso); ``after_step(model)`` runs after
    each optimizer step (e.g. re-projection onto a structure).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    params = dict(model.named_parameters())
    n = len(data.train_x)
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False, unit="epoch")
    for _ in bar:
        model.train()
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = loss_of(model, data.train_x[idx], data.train_y[idx] if data.train_y is not None else None)
            if penalty is not None:
                loss = loss + penalty(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for name, mask in masks.items():
                        params[name].mul_(mask)
            if after_step is not None:
                after_step(model)
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return accuracy(model, data.test_x, data.test_y)
