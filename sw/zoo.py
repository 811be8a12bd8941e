"""The tinyML model zoo: the four MLPerf Tiny reference networks in PyTorch, with seeded synthetic data.

Architectures only — no weights and no data sets are downloaded. ``sparsyn compress --model zoo:NAME`` builds
the network, trains it briefly (:data:`ZOO` recipes; a progress bar; cached under ``work/cache`` like the
default model) on its synthetic data (:func:`zoo_data`) or on the ``--data`` given, then compresses it.

=================  ====================  ===========  =======  ===============================================
name               task                  input        classes  reference (github.com/mlcommons/tiny)
=================  ====================  ===========  =======  ===============================================
``ic-resnet8``     image classification  3×32×32     10       ``benchmark/training/image_classification/
                                                               keras_model.py`` ``resnet_v1_eembc``
``kws-dscnn``      keyword spotting      1×49×10     12       ``benchmark/training/keyword_spotting/
                                                               keras_model.py`` ``ds_cnn``
``vww-mobilenet``  visual wake words     3×96×96     2        ``v0.1/benchmarks/visual_wake_words/
                                                               vww_model.py`` ``mobilenet_v1`` (α = 0.25)
``ad-autoencoder`` anomaly detection     640         —        ``v0.1/benchmarks/anomaly_detection/
                                                               keras_model.py`` ``get_model(640)``
=================  ====================  ===========  =======  ===============================================

Each ``NAME-tiny`` is the same structure (the same operators, so the same refusals) on a small input with
narrow layers, for tests. **What compresses today**: ``ad-autoencoder`` (a chain of Linear + BatchNorm1d +
ReLU); the three CNNs are refused by the importer in one line listing every operator it does not support yet
(residual adds, average pooling; their depthwise convolutions and DS-CNN's non-square kernel and padding are
imported).

**Parameter counts** (:data:`KERAS_PARAMS`): the Keras "Total params" of each reference, counted layer by layer
from its source (convolutions and Dense with bias, as Keras builds them; BatchNormalization counts gamma, beta
and the two moving statistics). :func:`keras_param_count` counts a PyTorch module the same way (parameters +
BatchNorm running mean and variance); the test suite checks the two agree.

**Deviations** (shapes and parameter counts are the reference's; what differs is stated): PyTorch has no
``padding='same'`` for strided convolutions, so the stride-2 convolutions pad symmetrically (e.g. 1 on every
side for 3×3 / stride 2, DS-CNN's first conv (5, 1)) where TensorFlow pads more at the bottom / right: the
output sizes are the same, the windows sit one row / column earlier. L2 regularizers and He initialization
are left out (PyTorch's default initialization; the synthetic training is brief anyway).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from .data import Dataset, dataset_from_arrays
from .errors import SparsynError


# ---------------------------------------------------------------------------------------------------- networks

class _ResidualStack(nn.Module):
    """conv3x3(stride) BN ReLU conv3x3 BN, added to the input (through a 1x1 stride-``stride`` conv when the
    width or the size changes), then ReLU: one stack of ``resnet_v1_eembc``."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride) if (cin != cout or stride != 1) else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu(self.shortcut(x) + y)


class ResNet8(nn.Module):
    """MLPerf Tiny image classification: ResNet-8 (``resnet_v1_eembc``, mlcommons/tiny
    ``benchmark/training/image_classification/keras_model.py``; EEMBC's CIFAR10_ResNetv1).

    conv3x3(3->16) BN ReLU; three residual stacks of two 3x3 convs (16, 32 stride 2, 64 stride 2; stacks 2 and
    3 add through a 1x1 stride-2 shortcut conv); AveragePooling over the whole 8x8 map; Flatten; Dense(10).
    Input (3, 32, 32); 78,666 Keras parameters (78,186 trainable + 480 BatchNorm statistics).

    ``size``, ``filters``: input side and stack widths (the ``-tiny`` variant: 8, (4, 8, 8))."""

    def __init__(self, classes: int = 10, size: int = 32, filters: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        f1, f2, f3 = filters
        self.conv = nn.Conv2d(3, f1, 3, padding=1)
        self.bn = nn.BatchNorm2d(f1)
        self.relu = nn.ReLU()
        self.stack1 = _ResidualStack(f1, f1, 1)
        self.stack2 = _ResidualStack(f1, f2, 2)
        self.stack3 = _ResidualStack(f2, f3, 2)
        self.pool = nn.AvgPool2d(size // 4)            # pool_size = the final map's side
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(f3, classes)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = self.stack3(self.stack2(self.stack1(x)))
        return self.fc(self.flatten(self.pool(x)))


def _separable(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    """DepthwiseConv2D 3x3 BN ReLU, Conv2D 1x1 BN ReLU (Keras convolutions have a bias)."""
    return [nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin), nn.BatchNorm2d(cin), nn.ReLU(),
            nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU()]


class DSCNN(nn.Sequential):
    """MLPerf Tiny keyword spotting: DS-CNN (``ds_cnn``, mlcommons/tiny ``benchmark/training/keyword_spotting/
    keras_model.py``; ARM's "Hello Edge" DS-CNN small).

    conv(10x4, stride 2, 1->64) BN ReLU Dropout(0.2); four depthwise-separable blocks (depthwise 3x3 BN ReLU,
    pointwise 1x1 BN ReLU, 64 channels); Dropout(0.4); AveragePooling2D(pool = (49 // 2, 10 // 2) = (24, 5)) over
    the 25x5 map (the window does not tile it: one output); Flatten; Dense(12). Input (1, 49, 10): 49 MFCC
    frames of 10 coefficients. 24,908 Keras parameters (23,756 trainable + 1,152 BatchNorm statistics).
    The first conv pads (5, 1) (TensorFlow's 'same' pads 4 above and 5 below: same 25x5 output).

    ``frames``, ``coefs``, ``filters``, ``kernel``, ``padding``: the ``-tiny`` variant uses 12, 6, 8, (4, 2),
    (2, 0)."""

    def __init__(self, classes: int = 12, frames: int = 49, coefs: int = 10, filters: int = 64,
                 kernel: tuple[int, int] = (10, 4), padding: tuple[int, int] = (5, 1)):
        layers = [nn.Conv2d(1, filters, kernel, stride=2, padding=padding),
                  nn.BatchNorm2d(filters), nn.ReLU(), nn.Dropout(0.2)]
        for _ in range(4):
            layers += _separable(filters, filters)
        layers += [nn.Dropout(0.4), nn.AvgPool2d((frames // 2, coefs // 2)), nn.Flatten(), nn.Linear(filters, classes)]
        super().__init__(*layers)


class MobileNetV1(nn.Sequential):
    """MLPerf Tiny visual wake words: MobileNetV1, width 0.25 (``mobilenet_v1``, mlcommons/tiny
    ``v0.1/benchmarks/visual_wake_words/vww_model.py``, from Silicon Labs' EEMBC ``mobilenet_v1_eembc``; the
    trained reference is ``benchmark/training/visual_wake_words/trained_models/vww_96_int8.tflite``).

    conv3x3(stride 2, 3->8) BN ReLU; 13 depthwise-separable blocks (depthwise 3x3 BN ReLU, pointwise 1x1 BN
    ReLU) to 16, 32 s2, 32, 64 s2, 64, 128 s2, 5x 128, 256 s2, 256 channels; AveragePooling over the 3x3 map;
    Flatten; Dense(2). Input (3, 96, 96). 221,794 Keras parameters (216,322 trainable + 5,472 BatchNorm
    statistics). (The reference uses ReLU, not Keras' ReLU6.)

    ``size``, ``width``: input side and the first conv's channels (8 = 0.25 x 32; ``-tiny``: 32, 4)."""

    #: (pointwise width as a multiple of ``width``, depthwise stride) of the 13 blocks.
    BLOCKS = ((2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2), (16, 1), (16, 1), (16, 1), (16, 1), (16, 1),
              (32, 2), (32, 1))

    def __init__(self, classes: int = 2, size: int = 96, width: int = 8):
        layers = [nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
        for mult, stride in self.BLOCKS:
            layers += _separable(cin, width * mult, stride)
            cin = width * mult
        layers += [nn.AvgPool2d(size // 32), nn.Flatten(), nn.Linear(cin, classes)]
        super().__init__(*layers)


class FCAutoencoder(nn.Sequential):
    """MLPerf Tiny anomaly detection: the fully connected autoencoder (``get_model(inputDim)``, mlcommons/tiny
    ``v0.1/benchmarks/anomaly_detection/keras_model.py``, Hitachi's DCASE 2020 task 2 baseline; the trained
    reference is ``benchmark/training/anomaly_detection/trained_models/ToyCar/.../model_ToyCar_quant_fullint_
    micro.tflite``).

    Dense(128) BN ReLU x4, Dense(8) BN ReLU, Dense(128) BN ReLU x4, Dense(640): input 640 = 5 frames x 128 log-mel
    bands, output its reconstruction (the anomaly score is the reconstruction error). 269,992 Keras parameters
    (267,928 trainable + 2,064 BatchNorm statistics).

    ``inputs``, ``hidden``, ``code``: the ``-tiny`` variant uses 32, 16, 4."""

    def __init__(self, inputs: int = 640, hidden: int = 128, code: int = 8):
        widths = [hidden] * 4 + [code] + [hidden] * 4
        layers, cin = [], inputs
        for w in widths:
            layers += [nn.Linear(cin, w), nn.BatchNorm1d(w), nn.ReLU()]
            cin = w
        layers.append(nn.Linear(cin, inputs))
        super().__init__(*layers)


def keras_param_count(module: nn.Module) -> int:
    """Parameters counted as Keras' "Total params": every parameter plus the BatchNorm running mean and variance
    (Keras' non-trainable moving statistics)."""
    stats = sum(m.running_mean.numel() + m.running_var.numel() for m in module.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)
    return sum(p.numel() for p in module.parameters()) + stats


# ------------------------------------------------------------------------------------------------ synthetic data
#
# Each generator draws class prototypes from a fixed generator (the task is the same for every seed) and the
# samples — which class, amplitude, shift, noise — from ``seed``: structured enough that a few epochs learn it.

_PROTO_SEED = 20240615


def _smooth(rng, shape, size: int) -> np.ndarray:
    """Low-frequency random pattern: a coarse (..., g, g) grid upsampled by repetition and box-blurred."""
    coarse = rng.standard_normal(shape)
    rep = size // shape[-1]
    img = np.kron(coarse, np.ones((rep, rep)))
    k = max(1, rep // 2)
    for axis in (-1, -2):           # a box blur softens the block edges
        img = sum(np.roll(img, s, axis=axis) for s in range(-k, k + 1)) / (2 * k + 1)
    return img


def _images(n, seed, classes, size):
    """Class prototypes (3, size, size) times a random gain, shifted up to size/8, plus noise."""
    protos = _smooth(np.random.default_rng(_PROTO_SEED), (classes, 3, 4, 4), size)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    gain = rng.uniform(0.6, 1.4, (n, 1, 1, 1))
    x = protos[y] * gain
    s = max(1, size // 8)
    for i, (dy, dx) in enumerate(rng.integers(-s, s + 1, (n, 2))):
        x[i] = np.roll(x[i], (dy, dx), axis=(1, 2))
    x += 0.5 * rng.standard_normal(x.shape)
    return x.astype(np.float32), y


def _mfcc(n, seed, classes, frames, coefs):
    """Per class two ridges in (time, coefficient), at a random time shift, plus noise: MFCC-like words."""
    prng = np.random.default_rng(_PROTO_SEED + 1)
    t, c = np.arange(frames)[:, None], np.arange(coefs)[None, :]
    protos = np.zeros((classes, frames, coefs))
    for k in range(classes):
        for _ in range(2):
            t0, c0 = prng.uniform(0.3, 0.7) * frames, prng.uniform(0, coefs)
            slope = prng.uniform(-0.5, 0.5) * coefs / frames
            protos[k] += 2.0 * np.exp(-((c - c0 - slope * (t - t0)) ** 2) / 2.0 - ((t - t0) ** 2) / (0.08 * frames ** 2))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = protos[y]
    s = max(1, frames // 10)
    for i, dt in enumerate(rng.integers(-s, s + 1, n)):
        x[i] = np.roll(x[i], dt, axis=0)
    x = x + 0.4 * rng.standard_normal(x.shape)
    return x[:, None].astype(np.float32), y


def _wake(n, seed, size):
    """Person (class 1): a bright upright ellipse of random size and place over a smooth background; no person
    (class 0): the background alone."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.stack([_smooth(rng, (3, 4, 4), size) for _ in range(n)]) * 0.7
    yy, xx = np.mgrid[0:size, 0:size]
    for i in np.nonzero(y)[0]:
        h = rng.uniform(0.2, 0.4) * size
        cy, cx = rng.uniform(h / 2, size - h / 2), rng.uniform(h / 4, size - h / 4)
        blob = ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (h / 4)) ** 2 <= 1
        x[i][:, blob] += np.array([1.5, 1.2, 1.0])[:, None]
    x += 0.3 * rng.standard_normal(x.shape)
    return x.astype(np.float32), y


def _machine(n, seed, frames, mels, code):
    """Normal machine sound, ``frames`` x ``mels`` log-mel vectors (frame-major, as the reference concatenates
    them): a fixed harmonic spectrum plus ``code`` random components of fixed shape, plus noise. No labels."""
    prng = np.random.default_rng(_PROTO_SEED + 2)
    m = np.arange(mels)
    base = sum(prng.uniform(0.5, 1.5) * np.exp(-((m - f) ** 2) / 8.0) for f in prng.uniform(0, mels, 6))
    basis = np.stack([_smooth(prng, (1, 1, 4), 4 * (frames * mels // 4 + 1))[0, 0, :frames * mels]
                      for _ in range(code)])
    rng = np.random.default_rng(seed)
    x = np.tile(base, frames)[None] + rng.normal(0, 0.7, (n, code)) @ basis
    x += 0.1 * rng.standard_normal(x.shape)
    return x.astype(np.float32), None


# ------------------------------------------------------------------------------------------------------ registry

@dataclass(frozen=True)
class ZooModel:
    """One zoo entry: how to build the network and its synthetic data, and how briefly to train it."""
    name: str
    task: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    classes: int | None
    data: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]]
    n: int                                   #: synthetic samples by default
    reference: str
    keras_params: int | None = None          #: the reference's Keras "Total params" (full-size entries)
    recipe: dict = field(default_factory=lambda: {"epochs": 4, "lr": 3e-3, "batch": 64, "seed": 0})


_TINY = {"epochs": 8, "lr": 3e-3, "batch": 32, "seed": 0}
_REF = "github.com/mlcommons/tiny "

#: The zoo, by name (``sparsyn compress --model zoo:NAME``).
ZOO: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("ic-resnet8", "image classification", ResNet8, (3, 32, 32), 10,
             lambda n, s: _images(n, s, 10, 32), 2000,
             _REF + "benchmark/training/image_classification/keras_model.py (resnet_v1_eembc)", 78_666),
    ZooModel("kws-dscnn", "keyword spotting", DSCNN, (1, 49, 10), 12,
             lambda n, s: _mfcc(n, s, 12, 49, 10), 2400,
             _REF + "benchmark/training/keyword_spotting/keras_model.py (ds_cnn)", 24_908),
    ZooModel("vww-mobilenet", "visual wake words", MobileNetV1, (3, 96, 96), 2,
             lambda n, s: _wake(n, s, 96), 600,
             _REF + "v0.1/benchmarks/visual_wake_words/vww_model.py (mobilenet_v1, alpha 0.25)", 221_794,
             {"epochs": 3, "lr": 3e-3, "batch": 32, "seed": 0}),
    ZooModel("ad-autoencoder", "anomaly detection", FCAutoencoder, (640,), None,
             lambda n, s: _machine(n, s, 5, 128, 8), 2000,
             _REF + "v0.1/benchmarks/anomaly_detection/keras_model.py (get_model(640))", 269_992,
             {"epochs": 12, "lr": 2e-3, "batch": 64, "seed": 0}),
    ZooModel("ic-resnet8-tiny", "image classification (tiny)", lambda: ResNet8(size=8, filters=(4, 8, 8)),
             (3, 8, 8), 10, lambda n, s: _images(n, s, 10, 8), 400, "ic-resnet8 on 8x8 inputs", recipe=_TINY),
    ZooModel("kws-dscnn-tiny", "keyword spotting (tiny)", lambda: DSCNN(frames=12, coefs=6, filters=8, kernel=(4, 2),
                                                                   padding=(2, 0)),
             (1, 12, 6), 12, lambda n, s: _mfcc(n, s, 12, 12, 6), 480, "kws-dscnn on 12x6 inputs", recipe=_TINY),
    ZooModel("vww-mobilenet-tiny", "visual wake words (tiny)", lambda: MobileNetV1(size=32, width=4),
             (3, 32, 32), 2, lambda n, s: _wake(n, s, 32), 200, "vww-mobilenet on 32x32 inputs", recipe=_TINY),
    ZooModel("ad-autoencoder-tiny", "anomaly detection (tiny)", lambda: FCAutoencoder(32, 16, 4),
             (32,), None, lambda n, s: _machine(n, s, 2, 16, 4), 400, "ad-autoencoder on 32 inputs",
             recipe={"epochs": 30, "lr": 3e-3, "batch": 32, "seed": 0}),
)}

#: The Keras "Total params" of each full-size reference (module docstring).
KERAS_PARAMS = {name: m.keras_params for name, m in ZOO.items() if m.keras_params is not None}

PREFIX = "zoo:"


def is_zoo(source) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def zoo_entry(name: str) -> ZooModel:
    """The entry of ``name`` (with or without ``zoo:``); an unknown name is refused with the list."""
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if key not in ZOO:
        raise SparsynError(f"unknown zoo model {key!r}; the zoo has: {', '.join(ZOO)} (e.g. --model zoo:kws-dscnn)")
    return ZOO[key]


def build_zoo_model(name: str, seed: int = 0) -> nn.Module:
    """The untrained network of ``name`` (initialized with ``seed``), in eval mode."""
    entry = zoo_entry(name)
    torch.manual_seed(seed)
    return entry.build().eval()


def zoo_data(name: str, n: int | None = None, seed: int = 0) -> Dataset:
    """``n`` (default: the entry's) seeded synthetic samples of the right shape and classes for ``name``, split
    like every data set (:mod:`sparsyn.sw.data`): structured (class prototypes + shifts + noise; the
    autoencoder's: low-rank spectra + noise) so that a few epochs learn something. Same ``seed``, same data."""
    entry = zoo_entry(name)
    n = int(entry.n if n is None else n)
    x, y = entry.data(n, seed)
    return dataset_from_arrays(x, y, classes=entry.classes, name=f"synthetic {entry.name} data",
                               source={"kind": "synthetic", "name": entry.name, "n": n, "seed": seed})


def _fingerprint(data: Dataset) -> str:
    src = data.source or {}
    if src.get("sha256") or src.get("kind") == "synthetic":
        return repr(sorted((k, v) for k, v in src.items() if k in ("kind", "name", "n", "seed", "sha256", "split")))
    h = hashlib.sha256(data.train_x.numpy().tobytes())
    if data.train_y is not None:
        h.update(data.train_y.numpy().tobytes())
    return h.hexdigest()


def zoo_model(name: str, data: Dataset | None = None, progress: bool = True) -> nn.Module:
    """The network of ``name`` trained briefly (its recipe) on ``data`` (default: :func:`zoo_data`), in eval
    mode; trained once per (recipe, architecture, data) and cached in the work folder's cache."""
    from .bench_common import one_torch_thread
    from .paths import cache_dir
    from .train import train
    entry = zoo_entry(name)
    data = data if data is not None else zoo_data(entry.name)
    model = build_zoo_model(entry.name, entry.recipe["seed"])
    key = hashlib.sha256((repr(sorted(entry.recipe.items())) + repr(model) + _fingerprint(data)).encode())
    path = cache_dir() / f"zoo-{entry.name}-{key.hexdigest()[:12]}.pt"
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        except Exception:
            path.unlink()                  # a corrupt cache is simply retrained
    r = entry.recipe
    with one_torch_thread():    # small batches: one thread is as fast, and never stalls on a busy second core
        train(model, data, epochs=r["epochs"], lr=r["lr"], batch=r["batch"], seed=r["seed"],
              desc=f"train {entry.name}", progress=progress)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model.eval()
