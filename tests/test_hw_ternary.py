"""The ternary adder-array PE in Amaranth's simulator, the LayerEngine skipping pruned tiles, and the
synthesized netlist holding no multiplier."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from sparsyn.hw.amaranth_sim import check_pe_cases, simulate_engine
from sparsyn.hw.cycles import program_cycles
from sparsyn.hw.engines import layer_engine
from sparsyn.hw.pe import ProcessingElement
from sparsyn.hw.schemes import make_product
from sparsyn.hw.schemes.ternary import TernaryProduct, product_width
from sparsyn.sw.golden import first_mismatch, run_layer
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import PackedLayer
from sparsyn.sw.schemes.ternary import TernaryScheme
from sparsyn.sw.ternarize import random_ternary_layer
from sparsyn.sw.testing import random_input


@pytest.mark.parametrize("tile", [1, 3, 8])
def test_product_matches_entry_coefficients(tile):
    packed = PackedLayer("ternary", {"tile": tile}, {})
    dut = make_product(packed)
    assert isinstance(dut, TernaryProduct) and dut.lanes == tile and dut.product_width == product_width(tile)
    rng = np.random.default_rng(tile)
    vectors = [(int(rng.integers(0, 1 << (2 * tile))), rng.integers(-128, 128, tile).tolist()) for _ in range(300)]
    all_sub = TernaryScheme.entry_word([-1] * tile)
    all_add = TernaryScheme.entry_word([1] * tile)
    vectors += [(all_sub, [-128] * tile), (all_add, [-128] * tile), (all_add, [127] * tile), (0, [127] * tile)]
    seen = []

    async def bench(ctx):
        for entry, xs in vectors:
            ctx.set(dut.entry.as_value(), entry)
            for lane, v in enumerate(xs):
                ctx.set(dut.x[lane], v)
            coeffs = TernaryScheme.entry_coefficients(packed, entry)
            expected = sum(c * v for c, v in zip(coeffs, xs))
            assert ctx.get(dut.product) == expected, (hex(entry), xs)
            seen.append(expected)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) == len(vectors)
    assert max(seen) == 128 * tile and min(seen) == -128 * tile    # both extremes went through the tree


def test_pe_accumulates_ternary_tiles():
    packed = PackedLayer("ternary", {"tile": 4}, {})
    pe = ProcessingElement(make_product(packed))
    rng = np.random.default_rng(2)
    cases = [(TernaryScheme.entry_word(rng.integers(-1, 2, 4)), rng.integers(-128, 128, 4).tolist(),
              int(rng.integers(-2**30, 2**30))) for _ in range(40)]
    vectors = [(entry, xs, ps, sum(c * x for c, x in zip(TernaryScheme.entry_coefficients(packed, entry), xs)))
               for entry, xs, ps in cases]
    assert check_pe_cases(pe, vectors) == len(cases)


# (kind, cin, h, w, cout, kernel, stride, padding), tile, array cols, array rows
ENGINE_CASES = {
    "conv_padded_tile": (("conv", 3, 5, 5, 6, 3, 1, 1), 4, 4, 2),
    "linear_two_sections": (("linear", 24, 1, 1, 7, 1, 1, 0), 8, 4, 2),
    "conv_cols1": (("conv", 2, 4, 4, 3, 3, 1, 0), 6, 1, 1),
}


@pytest.mark.parametrize("name", list(ENGINE_CASES))
def test_engine_skips_pruned_tiles_bit_exact(name):
    geom, tile, cols, rows = ENGINE_CASES[name]
    rng = np.random.default_rng(len(name))
    layer = random_ternary_layer(rng, *geom, tile=tile, cols=cols, occupancy=0.5, name=name)
    array = ArrayConfig(rows, cols)
    scheme = TernaryScheme(array=array, tile=tile)
    packed = scheme.pack(layer)
    engine = layer_engine(layer, packed)
    program = scheme.schedule(layer)[0]
    images = [random_input(rng, layer)[0] for _ in range(2)]
    outs, stats = simulate_engine(engine, [x.numpy().ravel() for x in images])
    for x, y in zip(images, outs):
        exp = run_layer(layer, x[None])[0].numpy()
        mm = first_mismatch([name], [exp[None]], [np.asarray(y).reshape(exp.shape)[None]])
        assert mm is None, str(mm)
    model = program_cycles(program, layer)
    assert engine.model == model
    assert all(s["measured"] == s["cycles"] == model["total"] for s in stats)
    # the schedule holds one slot per stored tile: fewer passes than the fully occupied layer
    stored = packed.meta["stats"]["stored_tiles"]
    assert program.slot_count == stored
    # ... and so does the weight ROM: one word per array row of those passes (none for a pruned tile)
    assert packed.meta["passes"] == len(program.passes)
    assert packed.roms["weights"].depth == max(2, len(program.passes) * rows)
    full = layer.weight.copy()
    full[full == 0] = 1
    layer_full = random_ternary_layer(np.random.default_rng(0), *geom, tile=tile, cols=cols, name=name)
    layer_full.weight = full
    prog_full = scheme.schedule(layer_full)[0]
    groups = packed.meta["stats"]["groups"]
    assert prog_full.slot_count == packed.meta["sections"] * -(-layer.k // tile) == groups > stored
    expected_passes = sum(-(-len(sec) // rows) or 1 for sec in program.sections)
    assert len(program.passes) == expected_passes < len(prog_full.passes)
    assert model["total"] < program_cycles(prog_full, layer_full)["total"]


def test_no_multiplier_in_the_ternary_pe():
    """No $mul before technology mapping, and no DSP/multiplier cell after iCE40 and ECP5 mapping."""
    from sparsyn.sw.bench_ternary import pe_components, synth_cells
    pes = pe_components(8)
    for family in ("ice40", "ecp5"):
        r = synth_cells(pes["ternary T=8"][0](), family, dsp=True)
        assert r["mul_cells"] == 0 and r["dsps"] == 0, r
        assert r["luts"] > 0
    # the check can fail: the int8 MAC PE does infer a multiplier / DSP
    r = synth_cells(pes["int8 MAC (1 lane)"][0](), "ice40", dsp=True)
    assert r["mul_cells"] >= 1 and r["dsps"] >= 1
