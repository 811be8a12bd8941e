"""The built-in dataset: scikit-learn's bundled 8x8 digits (no download), fixed split and seed."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

SEED = 0
TEST_FRACTION = 0.25


@dataclass(frozen=True)
class Dataset:
    """Float images (B, 1, 8, 8) in [0, 16] and int64 labels, split once with a fixed seed."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int = 10

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


@lru_cache(maxsize=1)
def digits() -> Dataset:
    """1347 train / 450 test images of sklearn.datasets.load_digits, permuted with seed 0."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.int64)
    order = torch.tensor(np.random.default_rng(SEED).permutation(len(y)))
    x, y = x[order], y[order]
    n_test = int(round(len(y) * TEST_FRACTION))
    return Dataset(x[n_test:], y[n_test:], x[:n_test], y[:n_test])
