"""Column-combining PE datapaths (hw/schemes/tight.py) in Amaranth's simulator against the software
model ``entry_coefficients``: every select value, int8 / subword extremes, random entries."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from sparsyn.hw.amaranth_sim import check_pe_cases
from sparsyn.hw.pe import ProcessingElement
from sparsyn.hw.schemes import make_product
from sparsyn.hw.schemes.tight import MuxProduct, SubwordProduct
from sparsyn.sw.packing import decode_fields, encode_fields, entry_layout
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import get_scheme
from sparsyn.sw.testing import random_quant_layer


def packed_for(scheme, alpha, subword, seed=0):
    rng = np.random.default_rng(seed)
    layer = random_quant_layer(rng, "linear", 24, 1, 1, 8, density=0.3)
    if subword:
        layer.weight = np.clip(layer.weight, -119, 119)
    # a section is the array's columns: 4, or 8 for alpha = 8 (a tight group spans one section's rows)
    array = ArrayConfig(4, 4 if alpha <= 4 else 8)
    return get_scheme(scheme)(array=array, alpha=alpha, subword=subword,
                              **({"anneal_steps": 20} if scheme == "tight" else {})).pack(layer)


def entries(alpha, subword, rng, count=40):
    layout = entry_layout(alpha, subword)
    sel = np.concatenate([np.arange(alpha), rng.integers(0, alpha, count)])
    m = len(sel)
    if subword:
        sub = np.concatenate([[-8, 7, -8, 7], rng.integers(-8, 8, m - 4)])[:m]
        shift = rng.integers(0, 2, m)
        shift[:2] = 1
        return encode_fields(layout, sub=sub, shift=shift, sel=sel)
    weight = np.concatenate([[-128, 127, -127, 0], rng.integers(-128, 128, m - 4)])[:m]
    return encode_fields(layout, weight=weight, sel=sel)


@pytest.mark.parametrize("scheme,alpha,subword", [("tight", 2, False), ("tight", 4, True), ("packcnn", 3, False),
                                                  ("packcnn", 8, False), ("tight", 8, True)])
def test_product_unit_matches_entry_coefficients(scheme, alpha, subword):
    rng = np.random.default_rng(alpha + 10 * subword)
    packed = packed_for(scheme, alpha, subword)
    dut = make_product(packed)
    assert isinstance(dut, SubwordProduct if subword else MuxProduct)
    words = entries(alpha, subword, rng)
    xs = rng.integers(-128, 128, (len(words), alpha))
    xs[:4] = -128
    xs[4:6] = 127
    checked = []

    async def bench(ctx):
        for word, x in zip(words, xs):
            ctx.set(dut.entry.as_value(), int(word))
            ctx.set(dut.x, [int(v) for v in x])
            coeff = get_scheme(scheme).entry_coefficients(packed, int(word))
            expected = int(np.dot(coeff, x))
            got = ctx.get(dut.product)
            assert got == expected, (decode_fields(entry_layout(alpha, subword), [word]), list(x), got, expected)
            checked.append(word)
            await ctx.delay(1e-9)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert len(checked) == len(words)


def test_pe_accumulates_selected_lane():
    """The generic PE around the mux product: psum_out = psum_in + weight * x[sel], registered."""
    packed = packed_for("tight", 4, False)
    pe = ProcessingElement(make_product(packed))
    layout = entry_layout(4, False)
    cases = [(-128, 3, [5, 6, 7, -128], 1000), (127, 0, [127, 0, 0, 0], -5), (-3, 2, [1, 2, -100, 4], 0)]
    vectors = [(int(encode_fields(layout, weight=[w], sel=[sel])[0]), x, ps, w * x[sel]) for w, sel, x, ps in cases]
    assert check_pe_cases(pe, vectors) == len(cases)


@pytest.mark.parametrize("scheme,alpha", [("tight", 2), ("packcnn", 4)])
def test_utilization_counts_one_multiplier_per_pe(scheme, alpha):
    """The column-combining PE multiplies one selected lane per cycle: its MAC units are R x C (not R x C x alpha),
    so utilization = nonzero-weight MACs / (R x C x cycles)."""
    from sparsyn.hw.engines import plan_layer
    from sparsyn.hw.plan import EngineLimits
    packed = packed_for(scheme, alpha, False)
    assert get_scheme(scheme).pe_macs(packed) == 1
    rng = np.random.default_rng(0)
    layer = random_quant_layer(rng, "linear", 24, 1, 1, 8, density=0.3)
    plan = plan_layer(layer, packed, ArrayConfig(4, 4), EngineLimits())
    m = plan.model
    assert m["pe_macs"] == 1
    assert m["utilization"] == pytest.approx(m["useful_macs"] / (16 * m["total"]))
