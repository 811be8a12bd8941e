"""Depthwise convs (block-diagonal on the shared array) and non-square kernels / strides / paddings (issue 15, item 2):
importer, golden model against PyTorch, manifest round trip, the im2col and window feeders per axis, and the RTL
bit- and cycle-exact on Icarus and Verilator for random layers and a tiny DS-CNN-like model on the sequenced engine."""
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from amaranth.hdl import Module
from amaranth.sim import Simulator
from torch import nn

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import im2col, layer_accumulators, run_golden, run_int8_reference
from sparsyn.sw.importer import import_model, run_float
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.testing import fit_requant, pack_layer, random_input, random_quant_layer

ARRAY = ArrayConfig(4, 4)


def _out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def geometry_layer(rng, cin, h, w, cout, kernel, stride, padding, name="ns", **kw):
    """A random integer conv with per-axis ``stride`` (sh, sw) and ``padding`` (ph, pw)."""
    (kh, kwd), (sh, sw), (ph, pw) = kernel, stride, padding
    base = random_quant_layer(rng, "conv", cin, h + 2 * ph, w + 2 * pw, cout, kernel=kernel, name=name, **kw)
    out = (cout, _out(h, kh, sh, ph), _out(w, kwd, sw, pw))
    return dataclasses.replace(base, in_shape=(cin, h, w), out_shape=out, stride=stride, padding=padding)


def depthwise_layer(rng, channels, h, w, mult=1, kernel=(3, 3), stride=1, padding=1, name="dw"):
    """A random integer depthwise conv (depth multiplier ``mult``) as its block-diagonal matrix."""
    kh, kwd = kernel
    layer = geometry_layer(rng, channels, h, w, channels * mult, kernel, (stride, stride), (padding, padding), name)
    owner = (np.arange(layer.n) // mult)[:, None] == (np.arange(layer.k) // (kh * kwd))[None, :]
    layer = dataclasses.replace(layer, weight=np.where(owner, layer.weight, 0), groups=channels)
    return fit_requant(rng, layer)


def ds_block(cin, cout, stride=1):
    return [nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin), nn.BatchNorm2d(cin), nn.ReLU(),
            nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU()]


def tiny_dscnn(classes=4):
    """DS-CNN in miniature: a non-square first conv (5x3, stride (2, 1), padding (2, 1)), two depthwise-separable
    blocks (the second strided), flatten, linear (no average pool: not supported yet). Input (1, 16, 6)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, (5, 3), stride=(2, 1), padding=(2, 1)), nn.BatchNorm2d(8), nn.ReLU(),
                      *ds_block(8, 8), *ds_block(8, 8, stride=2), nn.Flatten(), nn.Linear(8 * 4 * 3, classes))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def tiny_data(classes=4, n=160):
    from sparsyn.sw.data import dataset_from_arrays
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, 1, 16, 6)).astype(np.float32)
    x[np.arange(n), 0, 2 + 3 * y, :] += 2.0           # a class-dependent band: something to learn
    return dataset_from_arrays(x, y, classes=classes, name="tiny-dscnn")


# ------------------------------------------------------------------------------------------------------- importer
def test_depthwise_separable_block_imports_and_computes_the_module():
    torch.manual_seed(1)
    block = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), *ds_block(6, 5), nn.Flatten(), nn.Linear(5 * 7 * 5, 3))
    with torch.no_grad():
        block[2].running_mean.uniform_(-0.3, 0.3)
        block[2].running_var.uniform_(0.5, 2.0)
    block.eval()
    layers = import_model(block, (3, 7, 5))
    dw = layers[1]
    assert (dw.kind, dw.groups, dw.in_shape, dw.out_shape) == ("conv", 6, (6, 7, 5), (6, 7, 5))
    assert dw.weight.shape == (6, 54)
    assert [l.groups for l in layers] == [1, 6, 1, 1, 1] and dw.relu
    # block-diagonal: output channel o only reads input channel o
    for o in range(6):
        row = dw.weight[o].reshape(6, 9)
        assert np.count_nonzero(np.delete(row, o, axis=0)) == 0 and np.count_nonzero(row[o]) == 9
    x = torch.randn(4, 3, 7, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        ref = block.double()(x)
    assert torch.allclose(run_float(layers, x), ref, rtol=1e-9, atol=1e-9)


def test_depth_multiplier_imports():
    m = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, groups=2)).eval()
    layer = import_model(m, (2, 5, 5))[0]
    assert layer.groups == 2 and layer.weight.shape == (6, 18)
    assert np.count_nonzero(layer.weight[:3, 9:]) == 0 and np.count_nonzero(layer.weight[3:, :9]) == 0


def test_other_group_counts_are_refused_in_one_line():
    m = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2))
    with pytest.raises(SparsynError) as err:
        import_model(m, (4, 6, 6))
    text = str(err.value)
    assert "\n" not in text and "grouped Conv2d (groups=2)" in text
    assert "depthwise: groups = in_channels" in text


def test_permdiag_refuses_a_depthwise_1x1_conv():
    """permdiag (convs=1) would project the module's compact N x 1 weights, not the layer's diagonal matrix."""
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.schemes import get_scheme
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1, groups=4), nn.ReLU(),
                      nn.Flatten(), nn.Linear(4 * 16 * 6, 4)).eval()
    scheme = get_scheme("permdiag")(array=ARRAY, p=2, epochs=0, convs=1)
    with pytest.raises(SparsynError, match="layer 2 is a depthwise 1x1 conv; .* set convs=0 to keep it dense"):
        compress_model(m, scheme, tiny_data(), progress=False, log=lambda *a, **k: None)


def test_dscnn_first_conv_imports():
    """DS-CNN's first layer: a 10x4 kernel, stride 2, padding (5, 1) on a 1x49x10 MFCC map -> 25x5."""
    m = nn.Sequential(nn.Conv2d(1, 4, (10, 4), stride=2, padding=(5, 1)), nn.ReLU()).eval()
    layer = import_model(m, (1, 49, 10))[0]
    assert (layer.kernel, layer.stride, layer.padding, layer.out_shape) == ((10, 4), 2, (5, 1), (4, 25, 5))
    m2 = nn.Sequential(nn.Conv2d(1, 2, (3, 2), stride=(2, 1), padding=(0, 1))).eval()
    layer2 = import_model(m2, (1, 7, 4))[0]
    assert (layer2.stride, layer2.padding, layer2.out_shape) == ((2, 1), (0, 1), (2, 3, 5))


# ------------------------------------------------------------------------------------- golden model vs PyTorch
@pytest.mark.parametrize("case", ["depthwise", "depthwise_x2_s2", "k10x4_s2_p5x1", "k5x3_s2x3_p1x2"])
def test_golden_accumulators_equal_torch_conv(case):
    """The golden model's integer accumulators equal PyTorch's own (grouped / per-axis) conv on the same integers."""
    rng = np.random.default_rng(len(case))
    if case.startswith("depthwise"):
        mult, stride = (2, 2) if case.endswith("s2") else (1, 1)
        layer = depthwise_layer(rng, 5, 7, 6, mult=mult, stride=stride)
        kh, kw = layer.kernel
        # the grouped torch weight: each output channel's own kh x kw block
        w = np.stack([layer.weight[o].reshape(5, kh, kw)[o // mult] for o in range(layer.n)])[:, None]
        conv = dict(stride=layer.stride, padding=layer.padding, groups=5)
    else:
        kernel, stride, padding = {"k10x4_s2_p5x1": ((10, 4), (2, 2), (5, 1)),
                                   "k5x3_s2x3_p1x2": ((5, 3), (2, 3), (1, 2))}[case]
        layer = geometry_layer(rng, 2, 13, 10, 3, kernel, stride, padding)
        w = layer.weight.reshape(layer.n, 2, *kernel)
        conv = dict(stride=stride, padding=padding)
    x = random_input(rng, layer, batch=2)
    ref = F.conv2d(x.double(), torch.as_tensor(w, dtype=torch.float64), torch.as_tensor(layer.bias).double(), **conv)
    acc = layer_accumulators(layer, x)
    assert acc.shape == ref.shape == (2, *layer.out_shape)
    assert torch.equal(acc, ref.to(torch.int64))


def test_tiny_dscnn_golden_equals_int8_reference_and_tracks_torch():
    from sparsyn.sw.golden import quantize_input
    from sparsyn.sw.quantize import quantize_model
    model, data = tiny_dscnn(), tiny_data()
    q = quantize_model(model, data)
    convs = [l for l in q.compute_layers if l.kind == "conv"]
    assert [l.groups for l in convs] == [1, 8, 1, 8, 1] and convs[0].stride == (2, 1) and convs[0].padding == (2, 1)
    x = quantize_input(data.test_x, q.input_scale)
    gold = run_golden(q, x)
    for a, b in zip(gold, run_int8_reference(q, x)):
        assert torch.equal(a, b)
    # the integer model's dequantized logits follow the float module's (int8 rounding only)
    with torch.no_grad():
        ref = model(data.test_x).double()
    got = gold[-1].reshape(len(x), -1).double() * q.layers[-1].out_scale
    assert torch.corrcoef(torch.stack([got.ravel(), ref.ravel()]))[0, 1] > 0.98


# --------------------------------------------------------------------------------------------------- manifest
def test_manifest_round_trip_keeps_groups_and_axes(tmp_path):
    from sparsyn.sw.compress import compress
    from sparsyn.sw.manifest import load_manifest
    out = tmp_path / "m"
    compress(tiny_dscnn(), "dense", {}, out, progress=False, log=lambda *a, **k: None, array="4x4", data=tiny_data())
    doc = json.loads((out / "manifest.json").read_text())
    recs = {r["name"]: r for r in doc["layers"]}
    assert recs["0"]["stride"] == [2, 1] and recs["0"]["padding"] == [2, 1] and "groups" not in recs["0"]
    assert recs["3"]["groups"] == 8 and recs["3"]["stride"] == 1 and recs["9"]["stride"] == 2
    model, _, _ = load_manifest(out)
    first, dw = model.layer("0"), model.layer("3")
    assert (first.stride, first.padding, first.stride_hw, first.padding_hw) == ((2, 1), (2, 1), (2, 1), (2, 1))
    assert dw.groups == 8 and dw.depthwise and model.layer("6").groups == 1


def test_manifest_without_groups_and_with_int_axes_still_loads(tmp_path):
    """A manifest of square layers is written as before (ints, no ``groups``) and loads; the schema takes ints or
    [rows, columns] and refuses a zero stride or three axes."""
    from sparsyn.sw.compress import compress
    from sparsyn.sw.manifest import load_manifest, reseal
    from sparsyn.sw.manifest_schema import MANIFEST_SCHEMA
    import jsonschema
    out = tmp_path / "m"
    square = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 6, 4)).eval()
    compress(square, "dense", {}, out, progress=False, log=lambda *a, **k: None, array="2x2", data=tiny_data())
    doc = json.loads((out / "manifest.json").read_text())
    conv = doc["layers"][0]
    assert conv["stride"] == 1 and conv["padding"] == 1 and "groups" not in conv
    assert load_manifest(out)[0].layer("0").groups == 1
    for bad in ([0, 1], [1, 2, 3], 0):
        edited = json.loads(json.dumps(doc))
        edited["layers"][0]["stride"] = bad
        assert not jsonschema.Draft202012Validator(MANIFEST_SCHEMA).is_valid(edited), bad
    edited = json.loads(json.dumps(doc))
    edited["layers"][0]["padding"] = [1, 1]
    (out / "manifest.json").write_text(json.dumps(edited))
    reseal(out, reference=False)
    assert load_manifest(out)[0].layer("0").padding == 1      # [1, 1] is the square padding 1


def test_manifest_refuses_a_depthwise_record_with_weights_off_the_diagonal(tmp_path):
    from sparsyn.sw.compress import compress
    from sparsyn.sw.manifest import load_manifest, reseal
    out = tmp_path / "m"
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 16 * 6, 4)).eval()
    compress(model, "dense", {}, out, progress=False, log=lambda *a, **k: None, array="2x2", data=tiny_data())
    doc = json.loads((out / "manifest.json").read_text())
    doc["layers"][1]["groups"] = 4                     # a regular conv claimed to be depthwise
    (out / "manifest.json").write_text(json.dumps(doc))
    reseal(out, reference=False)
    with pytest.raises(SparsynError, match="recorded as depthwise but its ROMs hold weights outside"):
        load_manifest(out)


# ------------------------------------------------------------------------------ feeders per axis (Amaranth sim)
NONSQUARE = [((1, 13, 10), (10, 4), (2, 2), (5, 1)), ((2, 9, 7), (5, 3), (2, 3), (1, 2)),
             ((2, 7, 8), (3, 3), (1, 2), (0, 1)), ((1, 8, 5), (2, 4), (3, 1), (1, 0))]


@pytest.mark.parametrize("shape,kernel,stride,padding", NONSQUARE, ids=[f"k{k[0]}x{k[1]}_s{s[0]}x{s[1]}_p{p[0]}x{p[1]}"
                                                                       for _, k, s, p in NONSQUARE])
def test_im2col_per_axis_equals_golden_im2col(shape, kernel, stride, padding):
    """PixelScanner + LaneAddress: every output pixel and lane address = the golden model's im2col (sh != sw,
    ph != pw); the scanner shared by two layers of different geometry too."""
    from sparsyn.hw.im2col import LaneAddress, PixelScanner
    rng = np.random.default_rng(0)
    layer = geometry_layer(rng, *shape[:1], *shape[1:], 2, kernel, stride, padding)
    other = random_quant_layer(rng, "conv", 2, 6, 6, 2, 3, 1, 1, name="other")
    cin, h, w = layer.in_shape
    index = torch.arange(1, cin * h * w + 1, dtype=torch.int64).reshape(1, cin, h, w)
    table = im2col(layer, index)[0].numpy()
    m = Module()
    m.submodules.scan = scan = PixelScanner([other, layer])
    m.submodules.lane = lane = LaneAddress([other, layer])
    m.d.comb += [lane.base_y.eq(scan.base_y), lane.base_x.eq(scan.base_x), lane.layer.eq(scan.layer)]

    async def bench(ctx):
        ctx.set(scan.layer, 1)
        ctx.set(scan.restart, 1)
        await ctx.tick()
        ctx.set(scan.restart, 0)
        for p in range(layer.pixels):
            assert ctx.get(scan.pixel) == p and ctx.get(scan.last) == (p == layer.pixels - 1)
            for k in range(layer.k):
                c, dy, dx = layer.k_decode(k)
                ctx.set(lane.desc, {"valid": 1, "channel": c, "dy": dy, "dx": dx})
                exp = int(table[p, k])
                assert ctx.get(lane.valid) == (exp != 0), (p, k)
                if exp:
                    assert ctx.get(lane.addr) == exp - 1, (p, k)
            ctx.set(scan.step, 1)
            await ctx.tick()
            ctx.set(scan.step, 0)
        assert ctx.get(scan.pixel) == 0

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("shape,kernel,stride,padding", NONSQUARE[1:], ids=["k5x3_s2x3_p1x2", "k3x3_s1x2_p0x1",
                                                                            "k2x4_s3x1_p1x0"])
def test_window_feeder_per_axis(shape, kernel, stride, padding):
    """The kernel-window feeder (``pattern``'s row feed) with sh != sw and ph != pw: every emitted window equals
    the input at (oy*sh - ph + dy, ox*sw - pw + dx)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_hw_feeders import run_feeder
    rng = np.random.default_rng(1)
    layer = geometry_layer(rng, *shape[:1], *shape[1:], 2, kernel, stride, padding)
    kh, kw = kernel
    (sh, sw), (ph, pw) = stride, padding
    cin, h, w = layer.in_shape
    descs = [[c % cin for c in range(2)], [(c + 1) % cin for c in range(2)]]
    x, got = run_feeder(layer, "window", 2, kh * kw, descs, hold=1)
    pixels = [(oy, ox) for oy in range(layer.out_shape[1]) for ox in range(layer.out_shape[2])]
    assert len(got) == 2 * len(pixels)
    for i, (ps, vectors) in enumerate(got):
        oy, ox = pixels[i % len(pixels)]
        for r in range(2):
            c = descs[ps][r]
            want = [int(x[c, oy * sh - ph + dy, ox * sw - pw + dx])
                    if 0 <= oy * sh - ph + dy < h and 0 <= ox * sw - pw + dx < w else 0
                    for dy in range(kh) for dx in range(kw)]
            assert vectors[r] == want, (ps, oy, ox, r)


# ---------------------------------------------------------------------------------------------- RTL, per layer
def check_row(row, layer, images=2):
    assert row["bit_exact"] and row["outputs_checked"] == images * layer.n * layer.pixels
    assert row["cycles_exact"] and row["cycles_all"] == row["cycles_model_all"]


RTL_LAYERS = {
    "depthwise_3x3": lambda rng: depthwise_layer(rng, 6, 6, 5),
    "depthwise_x2_s2": lambda rng: depthwise_layer(rng, 3, 7, 6, mult=2, stride=2),
    "k6x3_s2x3_p3x1": lambda rng: geometry_layer(rng, 2, 11, 8, 5, (6, 3), (2, 3), (3, 1)),
}


@pytest.mark.parametrize("name", list(RTL_LAYERS))
def test_engine_layer_rtl(simulator, name, tmp_path):
    from sparsyn.sim.check import run_engine
    rng = np.random.default_rng(len(name))
    layer = RTL_LAYERS[name](rng)
    row = run_engine(layer, pack_layer(layer, array=ARRAY), ARRAY, simulator, random_input(rng, layer, 2),
                     test_dir=tmp_path)
    check_row(row, layer)


def test_pattern_window_feed_nonsquare_rtl(simulator, tmp_path):
    """A pattern layer (window feed) with a 5x3 kernel, stride (2, 1), padding (1, 2)."""
    from sparsyn.sim.check import run_engine
    from sparsyn.sw.schemes.pattern import PatternScheme
    from sparsyn.sw.testing import random_pattern_layer
    rng = np.random.default_rng(5)
    base, table, _ = random_pattern_layer(rng, "conv", 3, 11, 10, 4, (5, 3), n=4, patterns=6, name="pat")
    layer = dataclasses.replace(base, in_shape=(3, 9, 6), out_shape=(4, _out(9, 5, 2, 1), _out(6, 3, 1, 2)),
                                stride=(2, 1), padding=(1, 2))
    array = ArrayConfig(2, 3)
    scheme = PatternScheme(array=array, n=4, patterns=6)
    scheme.tables[layer.name], scheme.zero_id[layer.name] = table, False
    packed = scheme.pack(layer)
    assert packed.meta["feed"] == "window"
    row = run_engine(layer, packed, array, simulator, random_input(rng, layer, 2), test_dir=tmp_path)
    check_row(row, layer)


# --------------------------------------------------------------------------- RTL, the whole model, one datapath
@pytest.fixture(scope="module")
def tiny_compressed(quick_opts):
    """``get(scheme) -> (qmodel, packed)``: the tiny DS-CNN compressed for a 2x2 array (short schedules)."""
    from sparsyn.sw.compress import compress_model
    from sparsyn.sw.schemes import get_scheme
    cache = {}

    def get(scheme):
        if scheme not in cache:
            s = get_scheme(scheme)(array=ArrayConfig(2, 2), **quick_opts[scheme])
            s.progress = False
            q, packed, _ = compress_model(tiny_dscnn(), s, tiny_data(), progress=False, log=lambda *a, **k: None)
            cache[scheme] = (q, packed)
        return cache[scheme]
    return get


def _run_model(scheme, simulator, tiny_compressed, tmp_path):
    from sparsyn.sim.check import run_sequenced
    from sparsyn.sw.golden import quantize_input
    q, packed = tiny_compressed(scheme)
    x = quantize_input(tiny_data().test_x[:2], q.input_scale)
    res = run_sequenced(q, packed, ArrayConfig(2, 2), simulator, x, test_dir=tmp_path)
    assert res["bit_exact"] and res["cycles_exact"] and res["outputs_checked"] == 2 * 4
    assert res["cycles_measured"] == res["cycles_model"]
    return q, packed, res


@pytest.mark.parametrize("scheme", ["dense", "tight"])
def test_tiny_dscnn_sequenced_rtl(scheme, simulator, tiny_compressed, tmp_path):
    q, packed, _ = _run_model(scheme, simulator, tiny_compressed, tmp_path)
    assert [q.layer(n).groups for n in ("3", "9")] == [8, 8]
    if scheme == "tight":          # the depthwise layers are packed by tight, their zeros grouped away
        dense = pack_layer(q.layer("3"), "dense", array=ArrayConfig(2, 2))
        assert packed["3"].scheme == "tight"
        # not pruned for groupings of its compact module weights: the kh x kw weights of every channel are kept
        # (but for one that int8 rounding may take to 0)
        assert all(np.count_nonzero(q.layer(n).weight) >= 8 * 9 - 2 for n in ("3", "9"))
        assert 2 * packed["3"].roms["weights"].bits < dense.roms["weights"].bits


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["packcnn", "ternary"])
def test_tiny_dscnn_sequenced_rtl_more_schemes(scheme, simulator, tiny_compressed, tmp_path):
    _run_model(scheme, simulator, tiny_compressed, tmp_path)
