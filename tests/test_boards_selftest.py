"""The on-board self-test, simulated: pass on the golden output, fail on a wrong one, fail on a hang."""
import numpy as np
import pytest
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from sparsyn.boards.selftest import SelfTest, check_selftest_vectors
from sparsyn.hw.engines import layer_engine
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import run_layer
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.testing import pack_layer, random_input, random_quant_layer


class NegateEngine(wiring.Component):
    """Stand-in with the LayerEngine port interface: out[i] = clamp(-in[i]); optionally never finishes."""
    act_in: In(stream.Signature(signed(8)))
    start: In(1)
    busy: Out(1)
    done: Out(1)
    cycles: Out(32)
    act_out: Out(stream.Signature(signed(8)))

    def __init__(self, n: int, hang: bool = False):
        self.n, self.hang = n, hang
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=signed(8), depth=self.n, init=[])
        wr, rd = mem.write_port(), mem.read_port(domain="comb")
        wptr, rptr = Signal(range(self.n + 1)), Signal(range(self.n + 1))
        m.d.comb += [self.act_in.ready.eq(~self.busy), wr.addr.eq(wptr), wr.data.eq(self.act_in.payload),
                     wr.en.eq(self.act_in.valid & self.act_in.ready), rd.addr.eq(rptr)]
        with m.If(wr.en):
            m.d.sync += wptr.eq(Mux(wptr == self.n - 1, 0, wptr + 1))
        with m.If(self.start & ~self.busy):
            m.d.sync += [self.busy.eq(1), self.done.eq(0), self.cycles.eq(0), rptr.eq(0)]
        with m.Elif(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            if not self.hang:
                with m.If(self.cycles == 5):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        neg = Signal(signed(9))
        m.d.comb += [neg.eq(-rd.data), self.act_out.valid.eq(self.done & (rptr < self.n)),
                     self.act_out.payload.eq(Mux(neg > 127, 127, neg))]
        with m.If(self.act_out.valid & self.act_out.ready):
            m.d.sync += rptr.eq(rptr + 1)
        return m


def run_selftest(st: SelfTest, max_cycles: int = 50_000) -> dict:
    sim = Simulator(st)
    sim.add_clock(1e-6)
    result = {}

    async def bench(ctx):
        seen_running = False
        for cycle in range(max_cycles):
            await ctx.tick()
            running = ctx.get(st.running)
            seen_running |= bool(running)
            if seen_running and not running:
                result.update(cycle=cycle, passed=ctx.get(st.passed), failed=ctx.get(st.failed),
                              timed_out=ctx.get(st.timed_out), mismatches=ctx.get(st.mismatches),
                              cycles=ctx.get(st.cycles))
                return

    sim.add_testbench(bench)
    sim.run()
    assert result, "self-test never finished"
    return result


def test_selftest_passes_on_golden_output_of_the_real_layer_engine():
    rng = np.random.default_rng(3)
    layer = random_quant_layer(rng, "conv", 2, 4, 4, 3, kernel=3, padding=1)
    x = random_input(rng, layer)
    engine = layer_engine(layer, pack_layer(layer, array=ArrayConfig(2, 2)))
    r = run_selftest(SelfTest(engine, x.reshape(-1), run_layer(layer, x).reshape(-1)))
    assert (r["passed"], r["failed"], r["mismatches"], r["timed_out"]) == (1, 0, 0, 0)
    assert r["cycles"] == engine.model["total"]


@pytest.mark.parametrize("wrong", [[0], [5, 17, 47]])
def test_selftest_fails_and_counts_each_wrong_element(wrong):
    rng = np.random.default_rng(4)
    layer = random_quant_layer(rng, "conv", 2, 4, 4, 3, kernel=3, padding=1)
    x = random_input(rng, layer)
    expected = run_layer(layer, x).reshape(-1).clone()
    for i in wrong:
        expected[i] = expected[i] + 1 if expected[i] < 127 else expected[i] - 1
    engine = layer_engine(layer, pack_layer(layer, array=ArrayConfig(2, 2)))
    r = run_selftest(SelfTest(engine, x.reshape(-1), expected))
    assert (r["passed"], r["failed"], r["mismatches"], r["timed_out"]) == (0, 1, len(wrong), 0)


def test_selftest_with_stand_in_engine_checks_the_last_element_too():
    codes = np.array([-128, -5, 0, 7, 127, 3])
    expected = np.clip(-codes, -128, 127)
    assert run_selftest(SelfTest(NegateEngine(len(codes)), codes, expected))["passed"] == 1
    bad = expected.copy()
    bad[-1] += 1
    r = run_selftest(SelfTest(NegateEngine(len(codes)), codes, bad))
    assert (r["failed"], r["mismatches"]) == (1, 1)


def test_selftest_times_out_on_a_hung_engine():
    codes = np.arange(4)
    r = run_selftest(SelfTest(NegateEngine(4, hang=True), codes, -codes, timeout_cycles=200))
    assert (r["passed"], r["failed"], r["timed_out"]) == (0, 1, 1)
    assert 195 <= r["cycle"] <= 210


@pytest.mark.parametrize("inp, exp, what", [([], [1], "input"), ([1], [300], "expected output")])
def test_selftest_refuses_empty_or_out_of_range_vectors(inp, exp, what):
    """The vectors are checked before any component is built (no engine, no SelfTest)."""
    with pytest.raises(SparsynError, match=what) as err:
        check_selftest_vectors(inp, exp)
    assert "\n" not in str(err.value)
    check_selftest_vectors([1], [-128, 127])          # int8 vectors pass


def test_selftest_of_the_whole_model_passes(tmp_path):
    """The ModelEngine self-test of a manifest, on the reference vectors stored in it."""
    from sparsyn.boards.build import make_selftest
    from sparsyn.sw.manifest import load_manifest
    from test_boards_platforms import small_model, write_small_manifest
    path = write_small_manifest(tmp_path / "small", small_model(7), ArrayConfig(2, 2))
    model, packed, _ = load_manifest(path)
    core, config = make_selftest(path, model, packed, ArrayConfig(2, 2), log=lambda *_: None)
    assert config["engine"] == "ModelEngine" and config["layer"] == "all" and config["array"] == "2x2"
    r = run_selftest(core, max_cycles=200_000)
    assert (r["passed"], r["failed"], r["mismatches"], r["timed_out"]) == (1, 0, 0, 0)
    assert r["cycles"] == config["engine_cycles"]
