"""The SPRAM weight store: byte writes from the host, word reads by the engine, the iCE40UP instance, the fit check."""
import pytest
from amaranth.sim import Simulator

from sparsyn.boards.devices import get_device
from sparsyn.boards.fit import MemoryUse, check_fit
from sparsyn.hw.spram import SpramStore, spram_banks, spram_image
from sparsyn.sw.errors import SparsynError


@pytest.mark.parametrize("width", [8, 16, 20, 36, 64])
def test_bytes_written_by_the_host_are_the_words_read(width):
    import random
    rng = random.Random(width)
    words = [rng.getrandbits(width) for _ in range(23)]
    image = spram_image(words, width)
    assert len(image) == 2 * spram_banks(width) * len(words)
    dut = SpramStore(width, len(words))
    got = []

    async def bench(ctx):
        for addr, byte in enumerate(image):
            ctx.set(dut.w_addr, addr)
            ctx.set(dut.w_data, byte)
            ctx.set(dut.w_en, 1)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        for i in range(len(words)):
            ctx.set(dut.r_addr, i)
            await ctx.tick()
            got.append(ctx.get(dut.r_data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == words


def test_iCE40UP_gets_SB_SPRAM256KA_instances():
    from amaranth.back import rtlil
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    store = SpramStore(36, 100)
    text = rtlil.convert(store, name="store", platform=ICEBreakerPlatform())
    assert text.count("cell \\SB_SPRAM256KA") == 3          # 36 bits: three SPRAMs side by side
    # elsewhere (simulation, Verilog for Icarus / Verilator) the behavioural model, no instance
    assert "SB_SPRAM256KA" not in rtlil.convert(SpramStore(36, 100), name="store")


def test_store_refuses_what_four_sprams_cannot_hold():
    from sparsyn.hw.spram import check_spram_store
    check_spram_store(64, 16384)
    with pytest.raises(SparsynError, match="a 65-bit weight word needs 5 SPRAMs side by side, the device has 4"):
        check_spram_store(65, 10)
    with pytest.raises(SparsynError, match="16385 weight words exceed the 16384"):
        check_spram_store(16, 16385)


def test_fit_check_counts_sprams_and_refuses_too_many():
    dev = get_device("iCE40UP5K")
    mems = [MemoryUse("engine.datapath.control.wstore.spram_0", 16, 9000, 1, 0, 1),
            MemoryUse("engine.datapath.acc.accmem", 64, 128, 2, 0, 1)]
    fit = check_fit(dev, mems)
    assert fit["spram_blocks"] == 1 and fit["bram_blocks"] == 8
    assert [m["kind"] for m in fit["memories"]] == ["spram", "bram"]
    big = [MemoryUse(f"core.wstore.spram_{k}", 16, 16384, 1, 0, 1) for k in range(5)]
    with pytest.raises(SparsynError, match=r"SPRAM stores \(weights, scratch\) need 5 SPRAMs but .* has 4"):
        check_fit(dev, big)
    with pytest.raises(SparsynError, match="need 1 SPRAMs but LFE5U-85F has 0"):
        check_fit(get_device("LFE5U-85F"), mems[:1])
