"""cocotb bench of one ProcessingElement (any scheme's datapath) against the scheme's PE model.

Parameters: ``scheme`` (for messages), ``lanes``, ``vectors``: list of
``[entry, [x_0..x_{L-1}], psum_in, [coeff_0..coeff_{L-1}]]`` where the coefficients are the software
scheme's ``entry_coefficients(packed, entry)`` evaluated by the caller (so the simulator process
does not import the PyTorch-based software stack).

Each vector takes one cycle: the entry is loaded on one edge, and on the next edge ``psum_out``
must equal ``psum_in + sum_l coeff_l(entry) * x_l`` (``coeff`` = the software scheme's
``entry_coefficients``) and ``x_out`` must equal ``x_in``. Loading the next entry overlaps with the
current product, so N vectors take N+2 cycles. Results: ``checked`` (vectors compared).
"""
from __future__ import annotations

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge, Timer

from sparsyn.sim.benches.common import start_clock
from sparsyn.sim.runner import bench_params, bench_result


def _pack_x(xs, lanes):
    word = 0
    for lane, v in enumerate(xs):
        word |= (int(v) & 0xFF) << (8 * lane)
    return word


@cocotb.test()
async def pe_matches_model(dut):
    p = bench_params()
    lanes = p["lanes"]
    vectors = p["vectors"]
    await start_clock(dut, load=0, entry_in=0, x_in=0, psum_in=0)
    checked = 0
    # cycle i: load entry i; the PE multiplies with entry i-1 (loaded on the previous edge)
    for i in range(len(vectors) + 1):
        if i < len(vectors):
            dut.load.value = 1
            dut.entry_in.value = vectors[i][0]
        else:
            dut.load.value = 0
        if i > 0:
            entry, xs, psum, coeffs = vectors[i - 1]
            dut.x_in.value = _pack_x(xs, lanes)
            dut.psum_in.value = psum & 0xFFFFFFFF
        await RisingEdge(dut.clk)
        await ReadOnly()
        if i > 0:
            expected = psum + sum(c * x for c, x in zip(coeffs, xs))
            actual = dut.psum_out.value.to_signed()
            x_out = int(dut.x_out.value)
            if actual != expected or x_out != _pack_x(xs, lanes):
                bench_result(checked=checked)
                raise AssertionError(
                    f"PE ({p['scheme']}) vector {i - 1}: entry=0x{entry:x} x={xs} psum_in={psum}: "
                    f"expected psum_out {expected}, actual {actual}; x_out 0x{x_out:x}")
            checked += 1
        await Timer(1, "ns")  # leave the read-only phase before driving the next vector
    bench_result(checked=checked)
