"""im2col address generation against the golden model's im2col (stride, padding, 1x1 .. 5x5 kernels)."""
import numpy as np
import pytest
import torch
from amaranth.hdl import Module
from amaranth.sim import Simulator

from sparsyn.hw.im2col import LaneAddress, PixelScanner
from sparsyn.sw.golden import im2col
from sparsyn.sw.testing import random_quant_layer


@pytest.mark.parametrize("cin,h,w,kernel,stride,padding", [
    (2, 5, 5, 3, 2, 0), (2, 6, 5, 3, 2, 1), (3, 4, 4, 1, 1, 0), (1, 7, 6, 5, 1, 2), (2, 9, 9, 5, 2, 1),
    (1, 5, 5, 3, 1, 1)])
def test_addresses_match_golden_im2col(cin, h, w, kernel, stride, padding):
    rng = np.random.default_rng(0)
    layer = random_quant_layer(rng, "conv", cin, h, w, 2, kernel, stride, padding)
    # golden im2col of the tensor 1..C*H*W: entry = address + 1, padding = 0
    index = torch.arange(1, cin * h * w + 1, dtype=torch.int64).reshape(1, cin, h, w)
    table = im2col(layer, index)[0].numpy()               # (Ho*Wo, K)
    m = Module()
    m.submodules.scan = scan = PixelScanner(layer)
    m.submodules.lane = lane = LaneAddress(layer)
    m.d.comb += [lane.base_y.eq(scan.base_y), lane.base_x.eq(scan.base_x)]
    seen = []

    async def bench(ctx):
        ctx.set(scan.restart, 1)
        await ctx.tick()
        ctx.set(scan.restart, 0)
        for p in range(layer.pixels):
            assert ctx.get(scan.pixel) == p
            assert ctx.get(scan.last) == (p == layer.pixels - 1)
            for k in range(layer.k):
                c, dy, dx = layer.k_decode(k)
                ctx.set(lane.desc, {"valid": 1, "channel": c, "dy": dy, "dx": dx})
                valid, addr = ctx.get(lane.valid), ctx.get(lane.addr)
                exp = int(table[p, k])
                assert valid == (exp != 0), (p, k)
                if exp:
                    assert addr == exp - 1, (p, k, addr, exp - 1)
                seen.append(valid)
            ctx.set(lane.desc, {"valid": 0, "channel": 0, "dy": 0, "dx": 0})
            assert ctx.get(lane.valid) == 0             # an invalid lane is never read
            ctx.set(scan.step, 1)
            await ctx.tick()
            ctx.set(scan.step, 0)
        assert ctx.get(scan.pixel) == 0                 # wraps after the last pixel

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) == layer.pixels * layer.k
    if padding:
        assert not all(seen)                            # padding positions were exercised
