"""SequencedEngine: the whole digits model on ONE shared datapath, bit-exact and cycle-exact vs the golden model."""
import numpy as np
import pytest

from sparsyn.hw.amaranth_sim import simulate_engine
from sparsyn.hw.model_engine import plan_model
from sparsyn.hw.sequenced_engine import SequencedEngine, plan_sequenced
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import quantize_input, run_golden
from sparsyn.sw.schedule import ArrayConfig


SCHEMES = ["dense", "packcnn", "tight", "ternary", "permdiag", "pattern", "pattern-m1"]


@pytest.fixture
def default(compressed_digits, quick_opts):
    """``default(scheme) -> (qmodel, packed, digits)``: the digits model compressed (short schedules) for 2x2."""
    from sparsyn.sw.data import digits

    def get(scheme):
        return (*compressed_digits(scheme.split("-")[0], ArrayConfig(2, 2), **quick_opts[scheme]), digits())
    return get


@pytest.mark.parametrize("scheme", SCHEMES)
def test_whole_model_on_one_datapath(scheme, default):
    array = ArrayConfig(2, 2)
    model, packed, data = default(scheme)
    plan = plan_sequenced(model, packed, array)
    engine = SequencedEngine(plan)
    x = quantize_input(data.test_x[:2], model.input_scale)
    # a wrong design may never finish: bound the run by the cycle model (with room for a wrong one)
    outs, stats = simulate_engine(engine, [x[i].numpy().ravel() for i in range(2)],
                                  max_cycles=4 * plan.cycle_model["total"] + 10_000)
    gold = run_golden(model, x)[-1].numpy().reshape(2, -1)
    for i in range(2):
        got = outs[i].ravel()
        bad = np.nonzero(got != gold[i])[0]
        assert not len(bad), f"image {i}: logit {bad[0]} expected {gold[i][bad[0]]}, got {got[bad[0]]}"
        # the cycle model is exact and equals the per-layer ModelEngine's (same FSM per layer); a PermDNN layer
        # (its own engine, dispatched by the sequencer) skips zero inputs: its cycles depend on the image
        assert stats[i]["measured"] == stats[i]["cycles"] == plan.cycles(x[i].numpy().ravel())
    per_layer = plan_model(model, packed, array)
    if len({s.engine.phases for s in per_layer.segments if hasattr(s.engine, "phases")}) == 1:
        assert plan.cycle_model["total"] == per_layer.cycle_model["total"]
    else:   # the layers with fewer PE phases hold their steps longer on the shared array
        assert plan.cycle_model["total"] > per_layer.cycle_model["total"]
    # one datapath kind per distinct PE: the first layer stays dense in every scheme; tight's and packcnn's mux-input
    # PE runs it too (a dense entry is its weight at lane 0), ternary's adder PE cannot
    # (pattern: each layer has its own pattern table, hence its own datapath; its convs use the window feed and
    # its linear layer the channels feed: two feeders)
    assert plan.cycle_model["datapaths"] == {"ternary": 2, "pattern": 3, "pattern-m1": 3}.get(scheme, 1)
    if scheme == "pattern-m1":
        # PEs time-multiplexed over different phases per layer: every layer holds its steps for the most
        assert {p.phases for p in plan.shared} == {4}
    if scheme == "permdiag":
        assert len(engine.own) == 1 and len(plan.shared) == 2


def test_one_array_and_memories_for_all_layers(default):
    """The shared datapath builds the array once and lays the layers' ROMs end to end, word for word."""
    from amaranth.hdl import Fragment
    array = ArrayConfig(2, 2)
    model, packed, _ = default("dense")
    plan = plan_sequenced(model, packed, array)
    engine = SequencedEngine(plan)
    Fragment.get(engine, None)
    roms = engine.datapath.rom_memories
    offsets = plan.rom_offsets
    for name in ("weights", "lanes", "passes", "bias", "requant"):
        words = list(roms[name].init)
        for p in plan.layers:
            at = offsets[name][p.layer.name]
            assert words[at:at + p.packed.roms[name].depth] == list(p.packed.roms[name].words), (name, p.layer.name)
    # ... and the per-layer descriptor table (one word per layer) is stored too
    assert plan.rom_bits == sum(pk.rom_bits for pk in packed.values()) + plan.descriptor.bits
    assert plan.descriptor.steps == ["conv1", "conv2", "fc"] and list(engine.descriptor_rom.init) == plan.descriptor.words


def test_refuses_what_it_cannot_share(default):
    """Layers with lane-descriptor ROMs and layers with implicit rows (another feed) cannot share the control."""
    array = ArrayConfig(2, 2)
    model, packed, _ = default("pattern")
    _, dense, _ = default("dense")
    mixed = dict(packed, conv1=dense["conv1"])
    with pytest.raises(SparsynError, match=r"row feeds \['channels', 'lanes', 'window'\], some with lane descriptor"):
        plan_sequenced(model, mixed, array)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_whole_model_rtl_on_both_simulators(scheme, simulator, default, tmp_path):
    """The sequenced engine's Verilog on Icarus and Verilator (cocotb, the engine bench's scoreboard): every logit
    of every image bit-exact, every image's cycles = the cycle model."""
    from sparsyn.sim.check import model_inputs, run_sequenced
    model, packed, _ = default(scheme)
    x, _ = model_inputs(model, 2)
    res = run_sequenced(model, packed, ArrayConfig(2, 2), simulator, x, test_dir=tmp_path)
    assert res["bit_exact"] and res["cycles_exact"] and res["outputs_checked"] == 20
    assert res["cycles_measured"] == res["cycles_model"]


def test_a_datapath_runs_another_kinds_layers_only_when_the_specs_agree(default):
    """``absorbs`` checks every entry of the other kind against the software specs' coefficients."""
    from sparsyn.hw.shared_product import absorbs, convert_entry
    _, tight, _ = default("tight")
    _, ternary, _ = default("ternary")
    assert tight["conv1"].scheme == "dense" and tight["conv2"].scheme == "tight"
    assert absorbs(tight["conv2"], tight["conv1"])          # weight w -> (index 0, weight w): w at lane 0
    assert not absorbs(ternary["conv2"], ternary["conv1"])  # a ternary code cannot hold an int8 weight
    assert not absorbs(tight["conv1"], tight["conv2"])      # a dense entry has no lane index
    from sparsyn.sw.schemes import get_scheme
    dense_layout = get_scheme("dense").entry_layout(tight["conv1"])
    tight_layout = get_scheme("tight").entry_layout(tight["conv2"])
    assert convert_entry(dense_layout, tight_layout, 0xFF) is not None
