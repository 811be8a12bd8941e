"""Small random fixtures shared by the tests and benches: integer layers with valid requantization.

``random_quant_layer`` builds a :class:`~sparsyn.sw.qmodel.QuantLayer` whose weights are int8 (or a
narrower ``weight_bits``), whose bias is small and whose ``mult``/``shift`` come from
:func:`~sparsyn.sw.requant.choose_multiplier`, scaled so that the outputs spread over the int8 range
instead of all clamping (so a bench that compares outputs actually exercises the rounding).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .qmodel import AddLayer, MaxPoolLayer, QuantLayer
from .requant import choose_multiplier


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv_out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis (PyTorch's floor formula)."""
    return (size + 2 * padding - kernel) // stride + 1


def random_quant_layer(rng: np.random.Generator, kind: str, cin: int, h: int, w: int, cout: int,
                       kernel=3, stride: int = 1, padding: int = 0, relu: bool = True, *,
                       density: float = 1.0, weight_bits: int = 8, name: str | None = None,
                       scheme: str = "dense") -> QuantLayer:
    """A random integer Conv2d (``kind="conv"``) or Linear (``kind="linear"``) layer.

    Parameters
    ----------
    rng : numpy Generator (the only source of randomness: same seed, same layer).
    kind : ``"conv"`` or ``"linear"``. For ``"linear"`` the input length is ``cin*h*w`` (a flattened
        C,H,W tensor), the output length ``cout``; kernel/stride/padding are ignored.
    cin, h, w : input tensor shape (C, H, W).
    cout : output channels N.
    kernel : int or (kh, kw); stride, padding : conv geometry (zero padding).
    relu : fuse a ReLU (output clamp 0..127 instead of -128..127).
    density : fraction of weights kept nonzero (random mask), to exercise sparse schedules.
    weight_bits : signed weight width; weights are drawn from the full range incl. the minimum.
    """
    if kind == "linear":
        k = cin * h * w
        in_shape, out_shape = (k, 1, 1), (cout, 1, 1)
        kernel, stride, padding = (1, 1), 1, 0
    elif kind == "conv":
        kh, kw = _pair(kernel)
        kernel = (kh, kw)
        ho, wo = conv_out_size(h, kh, stride, padding), conv_out_size(w, kw, stride, padding)
        if ho < 1 or wo < 1:
            raise ValueError(f"kernel {kernel} with padding {padding} does not fit a {h}x{w} input")
        k = cin * kh * kw
        in_shape, out_shape = (cin, h, w), (cout, ho, wo)
    else:
        raise ValueError(f"kind must be 'conv' or 'linear', got {kind!r}")
    lo, hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    weight = rng.integers(lo, hi + 1, size=(cout, k)).astype(np.int64)
    if density < 1.0:
        weight[rng.random(size=weight.shape) >= density] = 0
    # put the extremes in somewhere so that PE corner cases are always covered
    if weight.size >= 2 and density >= 1.0:
        weight.flat[rng.integers(weight.size)] = lo
        weight.flat[rng.integers(weight.size)] = hi
    # accumulator spread: sum of k products of ~uniform(-128,127) x ~uniform(lo,hi), times density
    sigma = math.sqrt(max(k * density, 1.0)) * 74.0 * max(hi, 1) / math.sqrt(3.0)
    bias = rng.integers(-int(sigma), int(sigma) + 1, size=cout).astype(np.int64)
    mult, shift = np.zeros(cout, np.int64), np.zeros(cout, np.int64)
    for n in range(cout):
        real = float(rng.uniform(0.5, 2.0)) * 48.0 / sigma
        mult[n], shift[n] = choose_multiplier(real)
    return QuantLayer(name=name or f"{kind}{cout}", kind=kind, in_shape=in_shape, out_shape=out_shape,
                      kernel=kernel, stride=stride, padding=padding, weight=weight, bias=bias,
                      mult=mult, shift=shift, relu=relu, in_scale=1.0, out_scale=1.0,
                      weight_scale=np.ones(cout), weight_bits=weight_bits, scheme=scheme)


def random_maxpool_layer(c: int, h: int, w: int, kernel: int = 2, stride: int | None = None,
                         padding: int = 0, name: str = "pool") -> MaxPoolLayer:
    """A MaxPoolLayer of the given geometry (no randomness; here for symmetry with the conv helper)."""
    stride = kernel if stride is None else stride
    out = (c, conv_out_size(h, kernel, stride, padding), conv_out_size(w, kernel, stride, padding))
    return MaxPoolLayer(name, (c, h, w), out, kernel, stride, padding)


def random_add_layer(rng: np.random.Generator, c: int, h: int, w: int, *, relu: bool | None = None,
                     mult_a: int | None = None, mult_b: int | None = None, shift: int | None = None,
                     name: str = "add", inputs=("a", "b")) -> AddLayer:
    """A residual add of two (c, h, w) tensors; the constants not given are random: multipliers normalised into
    ``[2**14, 2**15)`` over a shift of 14..17, so that the outputs spread over the int8 range (rounding and both
    clamps exercised) rather than all clamping."""
    relu = bool(rng.integers(2)) if relu is None else relu
    mult_a = int(rng.integers(1 << 14, 1 << 15)) if mult_a is None else mult_a
    mult_b = int(rng.integers(1 << 14, 1 << 15)) if mult_b is None else mult_b
    shift = int(rng.integers(14, 18)) if shift is None else shift
    return AddLayer(name, (c, h, w), (c, h, w), tuple(inputs), mult_a, mult_b, shift, relu=relu)


def random_input(rng: np.random.Generator, layer, batch: int = 1) -> torch.Tensor:
    """Random int8 activation codes for ``layer``'s input: int64 tensor (batch, C, H, W), full range."""
    shape = (batch, *layer.in_shape)
    x = rng.integers(-128, 128, size=shape).astype(np.int64)
    flat = x.reshape(batch, -1)
    if flat.shape[1] >= 2:   # make sure both extremes are present
        flat[:, 0], flat[:, -1] = -128, 127
    return torch.from_numpy(flat.reshape(shape).copy())


def pack_layer(layer: QuantLayer, scheme: str = "dense", array=None, **options):
    """Pack ``layer`` with a scheme (default dense) for ``array`` (an ArrayConfig or "RxC", default 4x4):
    the PackedLayer (memory images) the hardware generators take."""
    from .schemes import get_scheme
    return get_scheme(scheme)(array=array, **options).pack(layer)


def random_pattern_layer(rng: np.random.Generator, kind: str, cin: int, h: int, w: int, cout: int, kernel=3,
                         stride: int = 1, padding: int = 0, *, n: int = 4, patterns: int = 8, m: int = 4,
                         zero_fraction: float = 0.0, name: str | None = None):
    """A random integer layer pruned to a random pattern set: ``(layer, table, ids)``.

    Kernels (kh*kw > 1) or, for 1x1 / Linear, groups of ``m`` consecutive inputs keep ``n`` weights at
    the positions of one of ``patterns`` distinct random patterns (every pattern is used when there are
    enough groups); a fraction ``zero_fraction`` of the groups is all zero. Kept weights are nonzero
    int8 values including both extremes."""
    from itertools import combinations
    layer = random_quant_layer(rng, kind, cin, h, w, cout, kernel, stride, padding, name=name)
    kh, kw = layer.kernel
    g = kh * kw if kh * kw > 1 else m
    all_sets = list(combinations(range(g), n))
    pick = rng.choice(len(all_sets), size=patterns, replace=False)
    table = np.zeros((patterns, g), dtype=bool)
    for i, j in enumerate(pick):
        table[i, list(all_sets[j])] = True
    j_groups = -(-layer.k // g)
    total = cout * j_groups
    ids = rng.integers(0, patterns, size=total)
    ids[:min(patterns, total)] = np.arange(min(patterns, total))
    zero = (np.arange(total) >= patterns) & (rng.random(total) < zero_fraction)   # the first use of each stays
    order = rng.permutation(total)
    ids, zero = ids[order], zero[order]
    mask = table[ids] & ~zero[:, None]
    vals = rng.integers(1, 128, size=mask.shape) * rng.choice([-1, 1], size=mask.shape)
    wpad = np.where(mask, vals, 0).reshape(cout, j_groups * g)
    if wpad.size:
        nz = np.flatnonzero(wpad)
        if len(nz) >= 2:
            wpad.flat[nz[0]], wpad.flat[nz[-1]] = -128, 127
    layer.weight = wpad[:, :layer.k].astype(np.int64)
    return layer, table, np.where(zero, -1, ids).reshape(cout, j_groups)


def random_permdiag_layer(rng: np.random.Generator, n: int, k: int, p: int, kind: str = "linear",
                          pixels: tuple[int, int] = (1, 1), name: str = "fc"):
    """A random int8 Linear (N x K) or 1x1 conv (K -> N channels on an ``pixels`` image) layer with the
    permuted-diagonal structure of random offsets in p x p blocks: ``(layer, offsets)``."""
    from .perm_diag import random_structure
    if kind == "linear":
        layer = random_quant_layer(rng, "linear", k, 1, 1, n, name=name)
    else:
        layer = random_quant_layer(rng, "conv", k, *pixels, n, kernel=1, name=name)
    offsets, mask = random_structure(rng, n, k, p)
    layer.weight = np.where(mask, layer.weight, 0)
    return layer, offsets


def fit_requant(rng: np.random.Generator, layer: QuantLayer) -> QuantLayer:
    """Redraw ``layer``'s bias and requantization for its (e.g. pruned) weights, in place, so that its outputs
    spread over the int8 range instead of saturating or collapsing to zero; returns the layer."""
    sigma = max(float(np.abs(layer.weight).sum(axis=1).mean()) * 40.0, 1.0)
    for n in range(layer.n):
        layer.mult[n], layer.shift[n] = choose_multiplier(float(rng.uniform(0.5, 2.0)) * 48.0 / sigma)
    layer.bias[:] = rng.integers(-int(sigma), int(sigma) + 1, size=layer.n)
    return layer


def run_cli(*args, env=None, timeout: float = 600):
    """``sparsyn ARGS`` in a fresh Python process (as a user runs it): the ``subprocess.CompletedProcess``."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "sparsyn.sw.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_line_error(result) -> str:
    """The single ``sparsyn: error: ...`` line of a refused command (exit code 2, nothing else on stderr)."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsyn: error: "), result.stderr
    return lines[0]
