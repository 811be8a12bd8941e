"""The ternary scheme in software: ternarizer, PE-tile groups from the array config, WPC, pruning,
ROM pack/decode (the array's memory images, every stored bit counted; trit5 only as a storage figure),
the schedule for the array given as ``array=``, the training flow and its refusals."""
import numpy as np
import pytest
import torch

from sparsyn.sw.array_format import check_array, rows_used
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.group_prune import GroupGrid, group_penalty, prune_groups, tile_sparsity, wpc_threshold
from sparsyn.sw.schedule import ArrayConfig, effective_weights
from sparsyn.sw.schemes import PackedLayer, Rom, get_scheme
from sparsyn.sw.schemes.ternary import TernaryScheme, trit5_bits
from sparsyn.sw.ternarize import random_ternary_layer, ternarize, ternarize_torch


# ---- ternarizer -----------------------------------------------------------------------------
@pytest.mark.parametrize("per_channel", [False, True])
def test_ternarize_matches_the_formula(per_channel):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 20)) * rng.uniform(0.1, 2, size=(6, 1))
    codes, alpha = ternarize(w, 0.3, per_channel)
    delta = 0.3 * np.abs(w).max()
    keep = np.abs(w) >= delta
    assert codes.dtype == np.int64 and set(np.unique(codes)) <= {-1, 0, 1}
    assert np.array_equal(codes, np.sign(w) * keep)
    assert 0 < keep.mean() < 1                      # the threshold really cuts
    if per_channel:
        for n in range(6):
            if keep[n].any():
                assert alpha[n] == pytest.approx(np.abs(w[n][keep[n]]).mean())
        assert len(set(np.round(alpha, 9))) > 1
    else:
        assert np.allclose(alpha, np.abs(w[keep]).mean())
    # torch STE version: same forward values, identity gradient
    wt = torch.tensor(w, requires_grad=True)
    out = ternarize_torch(wt, 0.3, per_channel)
    assert np.allclose(out.detach().numpy(), alpha[:, None] * codes)
    out.sum().backward()
    assert torch.equal(wt.grad, torch.ones_like(wt))


def test_ternarize_is_idempotent_on_ternary_weights():
    rng = np.random.default_rng(1)
    codes0 = rng.integers(-1, 2, size=(4, 9))
    codes, alpha = ternarize(0.37 * codes0, 0.05)
    assert np.array_equal(codes, codes0) and np.allclose(alpha, 0.37)


@pytest.mark.parametrize("delta", [0.0, -0.1, 1.0, float("nan")])
def test_ternarize_refuses_bad_delta(delta):
    with pytest.raises(SparsynError, match="delta"):
        ternarize(np.ones((2, 2)), delta)


def test_ternarize_refuses_all_zero_layer():
    with pytest.raises(SparsynError, match="dead"):
        ternarize(np.zeros((3, 4)), 0.05, name="fc")


# ---- groups -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n,k,cols,tile", [(16, 72, 4, 8), (10, 64, 4, 8), (10, 27, 3, 4), (5, 7, 1, 3)])
def test_group_grid_is_derived_from_array_and_tile(n, k, cols, tile):
    g = GroupGrid(n, k, cols, tile)
    assert (g.sections, g.tiles) == (-(-n // cols), -(-k // tile))
    assert g.sizes().sum() == n * k and g.padded == (k % tile != 0)
    rng = np.random.default_rng(n + k)
    w = rng.normal(size=(n, k))
    # every weight lies in exactly the group (row // cols, col // tile)
    norms = g.norms(w)
    for s in range(g.sections):
        for j in range(g.tiles):
            block = w[s * cols:(s + 1) * cols, j * tile:(j + 1) * tile]
            assert norms[s, j] == pytest.approx(np.sqrt((block ** 2).sum()))
    keep = rng.random((g.sections, g.tiles)) < 0.5
    mask = g.expand(keep)
    assert mask.shape == (n, k)
    assert np.array_equal(g.occupancy(w * mask), keep)
    tn = g.norms(torch.tensor(w))
    assert np.allclose(tn.numpy(), norms)


def test_wpc_penalty_clips_gradient_above_threshold():
    a = torch.tensor([0.1, 0.2, 0.5, 1.0, 2.0, 3.0], requires_grad=True)
    mean = a.detach().mean().item()
    # papers.md mode: theta = r * mean
    theta = wpc_threshold(a, 0.7)
    assert theta.item() == pytest.approx(0.7 * mean)
    r = group_penalty(a, wpc=True, ratio=0.7)
    r.backward()
    assert torch.equal(a.grad, (a.detach() < 0.7 * mean).double() if a.dtype == torch.float64 else
                       (a.detach() < 0.7 * mean).float())
    assert r.item() == pytest.approx(sum(min(v, 0.7 * mean) for v in a.tolist()))
    # target mode: theta = max(r * mean, a_(m)) with m = round(s * G) -> exactly m groups shrink
    a.grad = None
    group_penalty(a, wpc=True, ratio=0.7, sparsity=0.5).backward()
    assert wpc_threshold(a, 0.7, 0.5).item() == pytest.approx(max(0.7 * mean, 1.0))
    assert a.grad.tolist() == [1, 1, 1, 0, 0, 0]
    # plain group lasso: every group is shrunk
    a.grad = None
    group_penalty(a, wpc=False).backward()
    assert a.grad.tolist() == [1] * 6
    assert wpc_threshold(a.detach().numpy(), 0.7) == pytest.approx(0.7 * mean)


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9])
def test_prune_groups_removes_the_weakest_tiles(sparsity):
    rng = np.random.default_rng(3)
    g = GroupGrid(12, 40, 4, 8)
    w = rng.normal(size=(12, 40))
    keep = prune_groups(g, w, sparsity)
    removed = int(round(sparsity * g.groups))
    assert (~keep).sum() == removed
    norms = g.norms(w)
    if removed:
        assert norms[~keep].max() <= norms[keep].min()
    assert tile_sparsity(g, w * g.expand(keep)) == pytest.approx(removed / g.groups)


@pytest.mark.parametrize("bad", [1.0, -0.01, 1.5])
def test_prune_groups_refuses_sparsity_outside_range(bad):
    with pytest.raises(SparsynError, match=r"\[0, 1\)"):
        prune_groups(GroupGrid(4, 8, 4, 8), np.ones((4, 8)), bad)


def test_prune_groups_refuses_dead_layer():
    g = GroupGrid(4, 16, 4, 8)
    with pytest.raises(SparsynError, match="conv2.*dead"):
        prune_groups(g, np.zeros((4, 16)), 0.5, "conv2")   # no live tile is left to keep


# ---- ROM format ---------------------------------------------------------------------------------
LAYERS = [("conv", 3, 5, 5, 6, 3, 1, 1, 4, 4), ("linear", 64, 1, 1, 10, 1, 1, 0, 8, 4),
          ("conv", 8, 4, 4, 16, 3, 1, 1, 8, 4), ("linear", 13, 1, 1, 5, 1, 1, 0, 5, 1)]


@pytest.mark.parametrize("geometry", LAYERS, ids=lambda g: f"{g[0]}{g[1]}x{g[4]}_T{g[8]}_C{g[9]}")
def test_pack_decode_round_trip_and_schedule(geometry):
    kind, cin, h, w, cout, kern, stride, pad, tile, cols = geometry
    rng = np.random.default_rng(cin * cout)
    layer = random_ternary_layer(rng, kind, cin, h, w, cout, kern, stride, pad, tile=tile, cols=cols,
                                 occupancy=0.5)
    rows = 3
    scheme = TernaryScheme(array=ArrayConfig(rows, cols), tile=tile)    # the array's columns = a group's rows
    packed = scheme.pack(layer)
    assert packed.meta["array"] == {"rows": rows, "cols": cols, "lanes": tile}
    assert np.array_equal(TernaryScheme.decode(packed), layer.weight)
    grid = GroupGrid(layer.n, layer.k, cols, tile)
    occ = grid.occupancy(layer.weight)
    assert 0 < occ.sum() < occ.size
    st = TernaryScheme.stats(packed, layer)
    assert st["stored_tiles"] == occ.sum() and st["groups"] == grid.groups
    # every stored bit: the weight memory holds one word of C 2T-bit entries per array row of each pass
    # (stored tiles only, R per pass); the lane memory is the index; pass table and constants the rest
    passes = sum(max(1, -(-int(n) // rows)) for n in occ.sum(axis=1))
    assert packed.meta["passes"] == passes
    wrom = packed.roms["weights"]
    assert (wrom.width, wrom.depth) == (cols * 2 * tile, max(2, passes * rows))
    kinds = packed.bits_by_kind()
    assert kinds["weights"] == wrom.bits and kinds["index"] == packed.roms["lanes"].bits > 0
    assert kinds["table"] == packed.roms["passes"].bits and kinds["constants"] > 0
    assert st["rom_bits"] == packed.rom_bits == sum(kinds.values())
    # the compress report: rates from every stored bit, the weight memory alone as a second figure
    from sparsyn.sw.compress import layer_report
    from sparsyn.sw.qmodel import QuantModel
    row = layer_report(QuantModel("t", layer.in_shape, 1.0, [layer], layer.n), {layer.name: packed})[0]
    assert (row["weight_bits"], row["stored_bits"]) == (kinds["weights"], packed.rom_bits)
    assert row["rate_vs_int8"] == pytest.approx(8 * layer.n * layer.k / packed.rom_bits)
    assert row["weights_rate_vs_int8"] == pytest.approx(8 * layer.n * layer.k / kinds["weights"])
    # trit5 (5 trits per byte) survives as a storage figure of the stored tiles' trits; the chip holds 2 bits
    trits = int(occ.sum()) * cols * tile
    assert st["trit5_bits"] == row["trit5_bits"] == trit5_bits(trits) == 8 * -(-trits // 5) < kinds["weights"]
    # the schedule: one slot per stored tile; it computes exactly the decoded matrix
    prog, meta = scheme.schedule(layer)
    assert prog.array == ArrayConfig(rows, cols, tile) and prog.entry_width == 2 * tile
    assert prog.slot_count == occ.sum() == rows_used(packed)
    assert [len(s) for s in prog.sections] == occ.sum(axis=1).tolist()
    assert meta["stats"] == packed.meta["stats"]
    coeffs = lambda e: TernaryScheme.entry_coefficients(packed, e)  # noqa: E731
    assert np.array_equal(effective_weights(prog, coeffs), TernaryScheme.decode(packed))
    if grid.padded:
        last = [s for sec in prog.sections for s in sec if s.lane_k[-1] == -1]
        assert last, "the padded tile's missing lanes must read the zero input"


def test_trit5_bits():
    assert [trit5_bits(t) for t in (0, 1, 5, 6, 10, 11)] == [0, 8, 8, 16, 16, 24]


def test_entry_layout_and_coefficients_agree():
    packed = PackedLayer("ternary", {"tile": 5}, {})
    layout = TernaryScheme.entry_layout(packed)
    assert layout.size == 10
    rng = np.random.default_rng(0)
    for _ in range(50):
        trits = rng.integers(-1, 2, size=5)
        word = TernaryScheme.entry_word(trits)
        assert TernaryScheme.entry_coefficients(packed, word) == tuple(int(t) for t in trits)
        view = layout.from_bits(word)
        assert [(int(view[l].en), int(view[l].neg)) for l in range(5)] == \
            [(int(t != 0), int(t < 0)) for t in trits]
    # the invalid code 0b10 is a skip in the PE model (the ROM decoder refuses it)
    assert TernaryScheme.entry_coefficients(packed, 0b10) == (0,) * 5


def test_packed_layer_refuses_another_array():
    rng = np.random.default_rng(0)
    layer = random_ternary_layer(rng, "linear", 16, 1, 1, 8, tile=8, cols=4)
    packed = TernaryScheme(tile=8).pack(layer)                         # default array: 4x4
    assert packed.array == ArrayConfig(4, 4, 8)
    with pytest.raises(SparsynError, match="packed for 4x4, not 4x2; re-run 'sparsyn compress --array 4x2'"):
        check_array(packed, ArrayConfig(4, 2))
    narrow = TernaryScheme(array=ArrayConfig(4, 2), tile=8).pack(layer)  # groups of 2 channels x 8 inputs
    check_array(narrow, ArrayConfig(4, 2))
    assert narrow.meta["sections"] == 4 and TernaryScheme.stats(narrow, layer)["groups"] == GroupGrid(8, 16, 2, 8).groups
    assert np.array_equal(TernaryScheme.decode(narrow), layer.weight)


def test_pack_refuses_bad_layers():
    rng = np.random.default_rng(0)
    layer = random_ternary_layer(rng, "linear", 12, 1, 1, 4, tile=8, cols=4)
    with pytest.raises(SparsynError, match="pad=0"):
        TernaryScheme(tile=8, pad=0).pack(layer)                     # 12 is not a multiple of 8
    TernaryScheme(tile=4, pad=0).pack(layer)                          # but of 4
    layer.weight = layer.weight * 0
    with pytest.raises(SparsynError, match="dead"):
        TernaryScheme(tile=4).pack(layer)
    layer.weight[0, 0] = 2
    with pytest.raises(SparsynError, match=r"outside \{-1, 0, 1\}"):
        TernaryScheme(tile=4).pack(layer)


def _with(packed, **roms):
    return PackedLayer("ternary", packed.meta, {k: v for k, v in {**packed.roms, **roms}.items() if v is not None})


def test_decode_refuses_corrupt_roms():
    rng = np.random.default_rng(5)
    layer = random_ternary_layer(rng, "linear", 16, 1, 1, 8, tile=8, cols=4, occupancy=0.9)
    packed = TernaryScheme().pack(layer)
    w = packed.roms["weights"]
    with pytest.raises(SparsynError, match="0b10"):              # the invalid 2-bit code
        TernaryScheme.decode(_with(packed, weights=Rom(w.width, [(w.words[0] & ~3) | 0b10] + w.words[1:])))
    lanes = packed.roms["lanes"]
    with pytest.raises(SparsynError, match="ROM 'lanes' is index.*expects index"):   # too short
        TernaryScheme.decode(_with(packed, lanes=Rom(lanes.width, lanes.words[:-1], "index")))
    with pytest.raises(SparsynError, match="ROM 'lanes' is constants.*expects index"):
        TernaryScheme.decode(_with(packed, lanes=Rom(lanes.width, lanes.words, "constants")))
    with pytest.raises(SparsynError, match="no 'requant' ROM"):
        TernaryScheme.decode_constants(_with(packed, requant=None))
    with pytest.raises(SparsynError, match=r"\['bitmap'\] that its engine does not load"):
        TernaryScheme.decode(_with(packed, bitmap=Rom(1, [1, 0], "index")))


@pytest.mark.parametrize("opts,match", [
    ({"sparsity": 1.0}, r"\[0, 1\)"), ({"sparsity": -0.2}, r"\[0, 1\)"), ({"delta": 0}, "delta"),
    ({"delta": -0.05}, "delta"), ({"tile": 0}, "tile"),
    ({"wpc": "maybe"}, "wpc"), ({"wpc_mode": "median"}, "wpc_mode"),
    # gone: the array's columns replace ``cols``, and trit5 is only a storage figure (not a packing)
    ({"cols": 4}, "has no option 'cols'"), ({"packing": "trit5"}, "has no option 'packing'"),
    ({"array": "4x0"}, "zero dimension"),
    ({"tile": "eight"}, "tile"), ({"bogus": 1}, "no option"),
])
def test_bad_options_are_one_line_errors(opts, match):
    with pytest.raises(SparsynError, match=match) as err:
        get_scheme("ternary")(**opts)
    assert "\n" not in str(err.value)


def test_options_parse_cli_strings():
    s = get_scheme("ternary")(wpc="0", per_channel="yes", tile="4", sparsity="0.25")
    assert s.opts["wpc"] is False and s.opts["per_channel"] is True and s.opts["tile"] == 4


# ---- training flow ------------------------------------------------------------------------------
def _Tiny():
    """A narrower default CNN (4 and 8 channels), seeded."""
    from sparsyn.sw.model_zoo import DigitsCNN
    torch.manual_seed(0)
    return DigitsCNN(4, 8)


@pytest.fixture(scope="module")
def tiny_trained():
    from sparsyn.sw.data import digits
    from sparsyn.sw.train import train
    model, data = _Tiny(), digits()
    train(model, data, epochs=3, lr=5e-3, progress=False)
    return model, data


@pytest.mark.parametrize("per_channel", [False, True])
def test_prepare_prunes_tiles_and_ternarizes(tiny_trained, per_channel):
    import copy
    model, data = tiny_trained
    model = copy.deepcopy(model)
    scheme = TernaryScheme(sparsity=0.5, lam=0.05, penalty_epochs=1, finetune_epochs=2, per_channel=per_channel)
    scheme.prepare(model, data, log=lambda *a: None)
    # the first layer is fine-tuned with the rest but left out of pruning and ternarization (dense int8)
    assert len(np.unique(model.conv1.weight.detach().abs().numpy().round(6))) > 3
    for name, n, k in (("conv2", 8, 36), ("fc", 10, 32)):
        w = getattr(model, name).weight.detach().reshape(n, -1).numpy()
        grid = scheme.grid(n, k)
        assert tile_sparsity(grid, w) >= 0.5 - 1 / grid.groups     # the target is reached
        nz = np.abs(w[w != 0])
        if per_channel:
            for row in w:
                assert len(np.unique(np.abs(row[row != 0]).round(6))) <= 1
        else:
            assert np.allclose(nz, nz[0])                           # one alpha per layer: weights are +-alpha
        codes, alpha, bits = scheme.quantize_weights(1, w)
        assert bits == 2 and np.array_equal(codes, np.sign(w)) and np.allclose(alpha[:, None] * codes, w)
    rec = scheme.history["layers"]["conv2"]
    assert rec["kept_groups"] == rec["groups"] - round(0.5 * rec["groups"])
    assert rec["wpc_threshold"] > 0


def test_wpc_warmup_runs_plain_group_lasso_before_the_clip(tiny_trained):
    """wpc_warmup=0.5: the first half of the penalty steps use sum a_g, then the clip -> a third outcome."""
    import copy
    model, data = tiny_trained
    out = {}
    for name, opts in (("wpc", {}), ("warm", {"wpc_warmup": 0.5}), ("gl", {"wpc": False})):
        m = copy.deepcopy(model)
        TernaryScheme(sparsity=0.5, lam=0.3, penalty_epochs=2, finetune_epochs=0, **opts).prepare(
            m, data, log=lambda *a: None)
        out[name] = m.conv2.weight.detach().numpy()
    assert not np.array_equal(out["warm"], out["wpc"]) and not np.array_equal(out["warm"], out["gl"])
    with pytest.raises(SparsynError, match="wpc_warmup"):
        TernaryScheme(wpc_warmup=1.0)


def test_applies_to_leaves_first_layer_dense_by_default():
    assert [TernaryScheme().applies_to(i, "conv", 3) for i in range(3)] == [False, True, True]
    assert [TernaryScheme(first_layer=1, last_layer=0).applies_to(i, "conv", 3) for i in range(3)] == \
        [True, True, False]


def test_prepare_refuses_unpadded_layer(tiny_trained):
    import copy
    model, data = tiny_trained
    with pytest.raises(SparsynError, match="does not divide K=36"):
        TernaryScheme(tile=8, pad=0).prepare(copy.deepcopy(model), data, log=lambda *a: None)


def test_prepare_says_it_pads_a_tile_that_does_not_divide_k(tiny_trained):
    import copy
    model, data = tiny_trained
    lines = []
    scheme = TernaryScheme(tile=8, sparsity=0.25, penalty_epochs=0, finetune_epochs=0)
    scheme.prepare(copy.deepcopy(model), data, log=lines.append)
    # conv2: K = 4*3*3 = 36 = 4*8 + 4 -> padded (said so); fc: K = 32 is a multiple of 8 -> not mentioned
    padded = [l for l in lines if "padded" in l]
    assert len(padded) == 1 and "'conv2' K=36" in padded[0] and "4 zero lanes" in padded[0]
    # a tile wider than K (T=64 > K=32/36) is one padded tile per section, not a refusal
    wide = TernaryScheme(tile=64, sparsity=0.0, penalty_epochs=0, finetune_epochs=0)
    wide.prepare(copy.deepcopy(model), data, log=lines.append)
    assert wide.grid(8, 36).tiles == 1 and wide.grid(8, 36).padded


def test_compress_pipeline_folds_alpha_into_requant(tiny_trained):
    from sparsyn.sw.compress import compress_model
    model, data = tiny_trained
    scheme = TernaryScheme(sparsity=0.5, lam=0.05, penalty_epochs=1, finetune_epochs=1)
    qmodel, packed, report = compress_model(model, scheme, data, progress=False, log=lambda *a: None)
    layers = {l.name: l for l in qmodel.compute_layers}
    assert layers["conv1"].scheme == "dense" and layers["conv2"].scheme == "ternary"
    for name in ("conv2", "fc"):
        layer = layers[name]
        assert set(np.unique(layer.weight)) <= {-1, 0, 1} and layer.weight_bits == 2
        assert packed[name].scheme == "ternary"
        # alpha is the weight scale, folded into mult * 2**-shift ~ s_in * alpha / s_out
        real = layer.in_scale * layer.weight_scale / layer.out_scale
        assert np.allclose(layer.mult * 2.0 ** -layer.shift.astype(float), real, rtol=1e-4)
    assert report["golden_equals_int8_reference"]
    assert report["rate_vs_fp32"] > 4
    assert report["weight_bits"] + report["index_bits"] + report["other_bits"] == report["stored_bits"] == \
        sum(p.rom_bits for p in packed.values())


def test_bench_tables_on_a_tiny_model(tiny_trained):
    """sparsyn bench --scheme ternary's compression and cycle tables on the tiny model: stored bits from
    the compress report (trit5 only as a labelled storage figure), cycles planned through the engine
    factory and measured in Amaranth's simulation, equal to the exact model."""
    from sparsyn.sw import bench_ternary as bench
    from sparsyn.sw.compress import compress_model
    model, data = tiny_trained
    quiet = {"progress": False, "log": lambda *a: None}
    q, p, r = compress_model(model, TernaryScheme(sparsity=0.5, lam=0.05, penalty_epochs=1, finetune_epochs=1),
                             data, **quiet)
    dq, dp, _ = compress_model(model, get_scheme("dense")(), data, **quiet)
    rows = {row["layer"]: row for row in bench.compression_rows({0.5: (q, p, r)})}
    assert set(rows) == {"conv2", "fc", "MODEL (conv1 int8)"}
    for name in ("conv2", "fc"):
        row, kinds = rows[name], p[name].bits_by_kind()
        assert (row["weight_bits"], row["index_bits"], row["stored_bits"]) == \
            (kinds["weights"], kinds["index"], p[name].rom_bits)
        assert row["trit5_bits"] == p[name].meta["stats"]["trit5_bits"] < row["weight_bits"]
        assert row["trit5_stored_bits"] == row["stored_bits"] - row["weight_bits"] + row["trit5_bits"]
    total = rows["MODEL (conv1 int8)"]
    assert total["stored_bits"] == r["stored_bits"] and total["rate_vs_fp32"] == r["rate_vs_fp32"]
    assert "NOT" in bench.COMPRESSION_TITLE and "trit5" in bench.COMPRESSION_TITLE
    cyc = {row["layer"]: row for row in bench.cycle_table(q, p, dq, dp, ArrayConfig(4, 4), measure=True)}
    assert [cyc[n]["scheme"] for n in ("conv1", "conv2", "fc")] == ["dense", "ternary", "ternary"]
    for row in cyc.values():
        assert row["cycles_exact"] and row["bit_exact"] and row["cycles_rtl"] == row["cycles_model"]
        assert row["array"] == "4x4" and row["slots"] > 0
    assert cyc["conv2"]["lanes"] == 8 and cyc["conv2"]["dense_int8_cycles"] > cyc["conv2"]["cycles_rtl"]
    with pytest.raises(SparsynError, match="packed for 4x4, not 2x2"):
        bench.cycle_table(q, p, dq, dp, ArrayConfig(2, 2), measure=False)


def _ternary_bn_model(scales):
    """Linear(16, 8) holding 0.3 * t, a BatchNorm1d whose per-channel scale gamma / sqrt(var + eps) is ``scales``
    (one negative), ReLU, Linear(8, 4) holding 0.2 * t: what prepare leaves before the importer folds the BN."""
    from torch import nn
    rng = np.random.default_rng(3)
    model = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    t1 = rng.choice([-1, 0, 1], size=(8, 16))
    t1[:, 0] = 1                                    # every channel keeps a weight
    t2 = rng.choice([-1, 1], size=(4, 8))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(0.3 * t1))
        model[0].bias.copy_(torch.tensor(rng.normal(0, 0.1, 8)))
        model[1].weight.copy_(torch.tensor(scales))
        model[1].bias.copy_(torch.tensor(rng.normal(0.5, 0.1, 8)))
        model[1].running_mean.zero_()
        model[1].running_var.fill_(1 - model[1].eps)
        model[3].weight.copy_(torch.tensor(0.2 * t2))
    return model.eval()


@pytest.mark.parametrize("array", ["1x1", "4x4"])
def test_quantize_keeps_ternary_channels_through_a_folded_batchnorm(array):
    """The importer folds a BatchNorm into the ternarized layer before it: w' = alpha * scale_c * t, still one
    magnitude per output channel. The integer model must keep t and take alpha * |scale_c| as the channel's
    weight scale. Re-ternarizing w' with one layer threshold delta * max|w'| and one layer alpha zeroed every
    channel of a small BN scale and gave the others a wrong scale (kws-dscnn ternary 1x1: integer 8 % top-1,
    compressed float 100 %)."""
    from sparsyn.sw.golden import logits, quantize_input
    from sparsyn.sw.importer import import_model
    from sparsyn.sw.quantize import quantize_layers
    scales = np.array([0.5, 1.0, 2.0, -4.0, 8.0, 20.0, 50.0, 100.0])
    model = _ternary_bn_model(scales)
    layers = import_model(model, (16,))
    folded = layers[0].weight.reshape(8, -1)
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    q = quantize_layers(layers, x, TernaryScheme(first_layer=1, array=array))
    l0 = q.compute_layers[0]
    assert l0.scheme == "ternary" and np.array_equal(l0.weight, np.sign(folded))    # no channel dropped
    assert np.allclose(l0.weight_scale, 0.3 * np.abs(scales), rtol=1e-6)
    assert np.allclose(l0.weight_scale[:, None] * l0.weight, folded, rtol=1e-6)
    # the integer model follows the float one (dequantized outputs within a few output steps)
    with torch.no_grad():
        ref = model(x).double().numpy()
    out = logits(q, quantize_input(x, q.input_scale)).double().numpy() * q.compute_layers[-1].out_scale
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
