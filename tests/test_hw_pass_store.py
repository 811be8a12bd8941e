"""The pass store's plan (plain data): one record per pass holding that pass's weights, lanes and pass-table words."""
import pytest

from sparsyn.hw.pass_store import RECORDS, pass_store_layout, pass_store_shape
from sparsyn.sw.errors import SparsynError


def _shared(manifest):
    from sparsyn.boards.infer import plan_engine
    from sparsyn.hw.descriptor import load_table
    from sparsyn.sw.manifest import load_manifest, resolve_array
    model, packed, doc = load_manifest(manifest)
    kind, plan, _ = plan_engine(model, packed, resolve_array(doc, None), load_table(manifest, doc), manifest=manifest)
    assert kind == "sequenced"
    return plan.shared


def test_records_hold_each_pass_words_of_the_three_roms(dense_row_manifest):
    plans = _shared(dense_row_manifest)
    lay = pass_store_layout(plans)
    assert lay.names == ("weights", "lanes", "passes") and lay.depth == sum(
        n * w for n, w in zip(lay.passes, lay.words))
    for i, p in enumerate(plans):
        assert lay.passes[i] == len(p.passes) and lay.words[i] == -(-sum(lay.widths[i].values()) // 16)
        for k in range(lay.passes[i]):
            at = lay.base[i] + k * lay.words[i]
            rec = sum(word << (16 * j) for j, word in enumerate(lay.image[at:at + lay.words[i]]))
            for name in lay.names:
                field = (rec >> lay.offset(i, name)) & ((1 << lay.widths[i][name]) - 1)
                assert field == p.packed.roms[name].words[k], (p.layer.name, k, name)
        if i:       # the hand-over before a layer prefetches its first records
            assert p.in_elements >= RECORDS * lay.words[i] + 2
    words, width, addr_bits = pass_store_shape(plans)
    assert words == lay.image and width == 16 and 2 ** addr_bits >= 2 * len(words)


def test_a_two_row_array_is_refused(dense_manifest):
    with pytest.raises(SparsynError, match="1-row array"):
        pass_store_layout(_shared(dense_manifest))


def test_prefetch_keeps_up_with_passes_as_short_as_the_record():
    """The worst case the plan admits: 4-word records, 4-cycle passes, the shortest hand-over. The control's reads
    (a pass's lane descriptor one pass ahead, its weights word at the previous pass's end, its pass-table word during
    the previous pass) each get their pass's word one cycle later, as from a block RAM."""
    import random

    from amaranth.sim import Simulator

    from sparsyn.hw.pass_store import PassStore, PassStoreLayout
    from sparsyn.hw.spram import spram_image
    rng = random.Random(1)
    n, widths = 40, {"weights": 18, "lanes": 22, "passes": 9}
    roms = {k: [rng.getrandbits(w) for _ in range(n)] for k, w in widths.items()}
    image = []
    for k in range(n):
        rec = roms["weights"][k] | roms["lanes"][k] << 18 | roms["passes"][k] << 40
        image += [(rec >> (16 * j)) & 0xFFFF for j in range(4)]
    lay = PassStoreLayout(("weights", "lanes", "passes"), [widths], [4], [0], [n], image)
    dut = PassStore(lay, {k: [0] for k in widths}, widths)

    async def bench(ctx):
        for addr, byte in enumerate(spram_image(image, 16)):
            ctx.set(dut.w_addr, addr)
            ctx.set(dut.w_data, byte)
            ctx.set(dut.w_en, 1)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        await ctx.tick().repeat(RECORDS * 4 + 2)           # the hand-over
        ctx.set(dut.busy, 1)                               # LOAD: pass 0's lanes, then its weights
        ctx.set(dut.lanes_addr, 0)
        await ctx.tick()
        ctx.set(dut.weights_addr, 0)
        assert ctx.get(dut.lanes_data) == roms["lanes"][0]
        await ctx.tick()
        for k in range(n):
            ctx.set(dut.head, k)
            ctx.set(dut.passes_addr, k + 1)
            for phase in range(4):
                if phase == 0:
                    assert ctx.get(dut.weights_data) == roms["weights"][k], k
                    ctx.set(dut.lanes_addr, k + 1)
                if phase == 1 and k + 1 < n:
                    assert ctx.get(dut.lanes_data) == roms["lanes"][k + 1], k
                if phase == 3:
                    ctx.set(dut.weights_addr, k + 1)
                    if k + 1 < n:
                        assert ctx.get(dut.passes_data) == roms["passes"][k + 1], k
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
