"""The built-in default model: a small CNN for the 8x8 digits, trained once on CPU and cached."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from .data import digits
from .paths import cache_dir
from .train import accuracy, train

#: Training recipe of the default model (part of its cache key).
DEFAULT_RECIPE = {"epochs": 40, "lr": 3e-3, "batch": 64, "seed": 0}


def build_default_model() -> nn.Module:
    """conv3x3(1->8, pad 1) ReLU maxpool2 -> conv3x3(8->16, pad 1) ReLU maxpool2 -> flatten -> linear(64->10)."""
    torch.manual_seed(DEFAULT_RECIPE["seed"])
    return DigitsCNN()


class DigitsCNN(nn.Module):
    """The default digits classifier (8x8 input, 10 classes; 1864 weights with the default widths).

    ``c1``, ``c2``: output channels of conv1 and conv2 (tests use narrower copies)."""

    def __init__(self, c1: int = 8, c2: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c2 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(self.flatten(x))


def _cache_key() -> str:
    text = repr(sorted(DEFAULT_RECIPE.items())) + repr(build_default_model())
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_model(progress: bool = True) -> nn.Module:
    """The trained default model; trains (well under a minute) on first use, then loads the cache."""
    path = cache_dir() / f"default-digits-{_cache_key()}.pt"
    model = build_default_model()
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            model.eval()
            return model
        except Exception:
            path.unlink()  # a corrupt cache is simply retrained
    data = digits()
    r = DEFAULT_RECIPE
    train(model, data, epochs=r["epochs"], lr=r["lr"], batch=r["batch"], seed=r["seed"],
          desc="train default model", progress=progress)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    model.eval()
    return model


def default_accuracy() -> float:
    data = digits()
    return accuracy(default_model(progress=False), data.test_x, data.test_y)
