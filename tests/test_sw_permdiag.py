"""permdiag (PermDNN) software: the permuted-diagonal structure, its projection, the ROM format and decoder
(property-based over p, shapes, PEs and multipliers), the stored bits, the compressor on the default model and
every refusal of bad input."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.perm_diag import (best_offsets, block_grid, diagonal_energy, diagonal_mask, project,
                                  random_structure, structure_offsets)
from sparsyn.sw.schemes import Rom, get_scheme
from sparsyn.sw.schemes.permdiag import PermDiagScheme, block_offsets, lane_plan, offset_bits
from sparsyn.sw.testing import random_permdiag_layer as permdiag_layer, random_quant_layer


def test_mask_is_one_diagonal_per_block():
    """Without padding every row and every column of every block has exactly one kept position, at
    (i + k) mod p; with padding a real row keeps at most one per block column."""
    rng = np.random.default_rng(0)
    for n, k, p in [(8, 12, 4), (9, 9, 3), (10, 15, 5)]:
        offsets, mask = random_structure(rng, n, k, p)
        br, bc = block_grid(n, k, p)
        for bi, bj in itertools.product(range(br), range(bc)):
            block = mask[bi * p:(bi + 1) * p, bj * p:(bj + 1) * p]
            assert block.sum(axis=1).tolist() == [1] * p and block.sum(axis=0).tolist() == [1] * p
            for i in range(p):
                assert block[i, (i + offsets[bi, bj]) % p]
    offsets, mask = random_structure(rng, 10, 13, 4)        # ragged: padded rows / columns are simply absent
    assert mask.shape == (10, 13) and mask.sum(axis=1).max() <= 4 and mask.sum(axis=0).max() <= 3


def test_projection_keeps_the_most_energy_per_block():
    """The projection's offset of each block maximises the kept squared magnitude (checked against every
    offset by brute force), ties go to the smaller offset, and the projected matrix keeps only that diagonal."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(11, 14))
    p = 4
    proj, offsets = project(w, p)
    energy = diagonal_energy(w, p)
    br, bc = block_grid(11, 14, p)
    for bi, bj in itertools.product(range(br), range(bc)):
        kept = [sum(w[bi * p + i, bj * p + (i + kk) % p] ** 2 for i in range(p)
                    if bi * p + i < 11 and bj * p + (i + kk) % p < 14) for kk in range(p)]
        assert np.allclose(energy[bi, bj], kept)
        assert offsets[bi, bj] == int(np.argmax(kept))
    assert np.array_equal(proj != 0, diagonal_mask(11, 14, p, offsets) & (w != 0))
    assert best_offsets(np.zeros((4, 4)), 2).tolist() == [[0, 0], [0, 0]]        # ties: the smaller offset


def test_structure_offsets_find_a_stray_weight():
    rng = np.random.default_rng(2)
    layer, offsets = permdiag_layer(rng, 8, 8, 4)
    got, stray = structure_offsets(layer.weight, 4)
    assert stray is None and np.array_equal(got[layer.weight.reshape(2, 4, 2, 4).any(axis=(1, 3))],
                                            offsets[layer.weight.reshape(2, 4, 2, 4).any(axis=(1, 3))])
    w = layer.weight.copy()
    row = 5
    col = [c for c in range(4) if w[row, c] == 0 and not diagonal_mask(8, 8, 4, got)[row, c]][0]
    w[row, col] = 7
    assert structure_offsets(w, 4)[1] == (row, col)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 40), k=st.integers(2, 40), p=st.integers(2, 9), pes=st.integers(0, 5),
       mults=st.integers(1, 3), seed=st.integers(0, 2**16), conv=st.booleans())
def test_pack_decode_roundtrip(n, k, p, pes, mults, seed, conv):
    """For any shape (ragged or not), p (powers of two and not), PEs and multipliers: decode(pack) gives the
    exact weights and constants back, the offsets ROM holds the structure's offsets, and the stored bits are
    exactly T*U*K weights + T*U*BC offsets (nothing else but the constants)."""
    if p > min(n, k):
        return
    rng = np.random.default_rng(seed)
    layer, offsets = permdiag_layer(rng, n, k, p, "conv" if conv else "linear", (2, 3))
    scheme = PermDiagScheme(p=p, pes=pes, mults=mults, convs=conv)
    packed = scheme.pack(layer)
    assert np.array_equal(PermDiagScheme.decode(packed), layer.weight)
    bias, mult, shift = PermDiagScheme.decode_constants(packed)
    assert np.array_equal(bias, layer.bias) and np.array_equal(mult, layer.mult) and np.array_equal(shift, layer.shift)
    m = packed.meta
    br, bc = block_grid(n, k, p)
    _, u, t = lane_plan(br, pes, mults)
    assert (m["lanes"], m["slots"], m["block_rows"], m["block_cols"]) == (u, t, br, bc)
    nonempty = layer.weight.reshape(n, k) != 0
    got = block_offsets(packed)
    for bi, bj in itertools.product(range(br), range(bc)):
        if nonempty[bi * p:(bi + 1) * p, bj * p:(bj + 1) * p].any():
            assert got[bi, bj] == offsets[bi, bj]
    kinds = packed.bits_by_kind()
    assert kinds["weights"] == 8 * u * max(t * k, 2)
    assert kinds["index"] == max(t * bc, 2) * u * offset_bits(p)
    assert kinds["table"] == 0 and sum(kinds.values()) == packed.rom_bits


def test_compression_is_p_up_to_the_offset_bits():
    """No padding, U dividing the block rows: the weight memory is exactly N*K/p int8 (rate p vs int8), and
    the only index is one ceil(log2 p)-bit offset per block."""
    rng = np.random.default_rng(3)
    for p in (2, 4, 8, 16):
        layer, _ = permdiag_layer(rng, 64, 128, p)
        packed = PermDiagScheme(p=p, pes=4).pack(layer)
        kinds = packed.bits_by_kind()
        assert kinds["weights"] == 8 * 64 * 128 // p
        assert kinds["index"] == (64 // p) * (128 // p) * offset_bits(p)
        assert 8 * 64 * 128 / kinds["weights"] == p
        assert packed.meta["stats"]["idle_lanes"] == 0


def test_corrupt_roms_are_refused():
    rng = np.random.default_rng(4)
    layer, _ = permdiag_layer(rng, 10, 12, 3)
    packed = PermDiagScheme(p=3, pes=2).pack(layer)

    def edited(name, words=None, width=None, kind=None):
        rom = packed.roms[name]
        other = type(packed)(packed.scheme, packed.meta, dict(packed.roms))
        other.roms[name] = Rom(width or rom.width, words if words is not None else list(rom.words), kind or rom.kind)
        return other

    off = packed.roms["offsets"]
    bad = [int(off.words[0]) | 3]                 # an offset of 3 >= p
    with pytest.raises(SparsynError, match="offset >= p=3"):
        PermDiagScheme.decode(edited("offsets", bad + list(off.words[1:])))
    w = packed.roms["weights"]
    # lane 1 of slot 1 is block row 3, which is row 9 .. 11: rows 10, 11 are padding
    t1 = [int(v) for v in w.words]
    for j in range(12):
        t1[12 + j] |= 0x05 << 8
    with pytest.raises(SparsynError, match="padded rows or idle lanes"):
        PermDiagScheme.decode(edited("weights", t1))
    with pytest.raises(SparsynError, match="ROM 'weights' is weights 8 bits"):
        PermDiagScheme.decode(edited("weights", width=8))
    with pytest.raises(SparsynError, match="ROM 'offsets' is weights"):
        PermDiagScheme.decode(edited("offsets", kind="weights"))


def test_refusals():
    """Bad input: one line naming the problem and the fix."""
    rng = np.random.default_rng(5)
    layer, _ = permdiag_layer(rng, 10, 12, 3)
    cases = [
        (dict(p=1), None, "p must be in 2..256"),
        (dict(p=11), layer, r"p=11 is larger than layer fc \(10 x 12\).*choose p <= 10"),
        (dict(p=4, pad=0), layer, r"p=4 does not divide layer fc \(10 x 12\) and pad=0"),
        (dict(p=3, pes=99), None, "pes must be in 0..64"),
        (dict(p=3, init="random"), None, "init must be project or scratch"),
        (dict(p=3, layer_p="fc"), None, "is not NAME=P"),
    ]
    for opts, lay, match in cases:
        with pytest.raises(SparsynError, match=match):
            PermDiagScheme(**opts).pack(lay)
    # a layer that is not permuted-diagonal
    dense = random_quant_layer(rng, "linear", 12, 1, 1, 10, name="fc")
    with pytest.raises(SparsynError, match=r"not permuted-diagonal in 3x3 blocks.*compress the model with permdiag"):
        PermDiagScheme(p=3).pack(dense)
    # kh x kw convs: FC and 1x1 only; strided 1x1 convs: the engine runs stride 1 without padding
    conv3 = random_quant_layer(rng, "conv", 4, 5, 5, 8, kernel=3, name="conv1")
    with pytest.raises(SparsynError, match="3x3 conv; permdiag compresses FC and 1x1 layers only"):
        PermDiagScheme(p=2, layer_p="conv1=2").pack(conv3)
    conv1 = random_quant_layer(rng, "conv", 4, 5, 5, 8, kernel=1, stride=2, name="pw")
    with pytest.raises(SparsynError, match="1x1 conv with stride 2"):
        PermDiagScheme(p=2, convs=1).pack(conv1)


class _ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.flatten(torch.relu(self.conv(x))))


def test_prepare_refuses_before_training():
    """Options a model's layers cannot have are refused before any training (names the layer and the fix)."""
    from sparsyn.sw.data import digits
    data = digits()
    with pytest.raises(SparsynError, match="option layer_p names 'fc2', which is not a conv/linear layer"):
        PermDiagScheme(layer_p="fc2=4").prepare(_ConvNet(), data, log=lambda *a: None)
    with pytest.raises(SparsynError, match="3x3 conv; permdiag compresses FC and 1x1 layers only"):
        PermDiagScheme(layer_p="conv=2").prepare(_ConvNet(), data, log=lambda *a: None)
    with pytest.raises(SparsynError, match="larger than layer fc"):
        PermDiagScheme(p=16).prepare(_ConvNet(), data, log=lambda *a: None)

    class Convs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 10, 8)

        def forward(self, x):
            return self.conv(x).flatten(1)
    with pytest.raises(SparsynError, match="no Linear"):
        PermDiagScheme().prepare(Convs(), data, log=lambda *a: None)


@pytest.mark.parametrize("init", ["project", "scratch"])
def test_default_model_fc_compresses(init):
    """The default model's FC layer compressed with permdiag: the integer weights are permuted-diagonal, the
    convs stay dense int8, the ROMs decode to the golden model's weights, accuracy is reported."""
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.data import digits
    from sparsyn.sw.model_zoo import default_model
    # p=2: 5 block rows; 5 PEs (one block row each) leave no lane idle
    scheme = get_scheme("permdiag")(p=2, pes=5, epochs=3 if init == "project" else 15, init=init)
    model, packed, report = compress_model(default_model(progress=False), scheme, digits(), progress=False,
                                           log=lambda *a, **k: None)
    fc = model.layers[-1]
    assert fc.scheme == "permdiag" and [l.scheme for l in model.compute_layers[:-1]] == ["dense", "dense"]
    assert structure_offsets(fc.weight, 2)[1] is None
    assert np.count_nonzero(fc.weight) <= fc.n * fc.k // 2
    assert np.array_equal(PermDiagScheme.decode(packed["fc"]), fc.weight)
    assert report["accuracy"]["int"] > 80.0, report["accuracy"]
    assert report["layers"][-1]["weights_rate_vs_int8"] == pytest.approx(2.0)
