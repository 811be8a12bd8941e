"""SequencedEngine: the whole digits model on ONE shared datapath, bit-exact and cycle-exact vs the golden model."""
import numpy as np
import pytest

from sparsyn.hw.amaranth_sim import simulate_engine
from sparsyn.hw.model_engine import plan_model
from sparsyn.hw.sequenced_engine import SequencedEngine, plan_sequenced
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import quantize_input, run_golden
from sparsyn.sw.schedule import ArrayConfig


def _default(scheme, array, **opts):
    """The default digits model compressed with ``scheme`` (as ``sparsyn compress`` does) and the data."""
    from sparsyn.sim.check import compressed_default
    from sparsyn.sw.data import digits
    from sparsyn.sw.schemes import get_scheme
    model, packed, _, _ = compressed_default(get_scheme(scheme)(array=array, **opts), images=1)
    return model, packed, digits()


# short compression schedules: the structure, not the accuracy, is under test
@pytest.mark.parametrize("scheme,opts", [("dense", {}), ("packcnn", {"prune_steps": 1, "finetune_epochs": 1}),
                                         ("tight", {"alpha": 2, "prune_steps": 1, "finetune_epochs": 1,
                                                    "anneal_steps": 20}),
                                         ("ternary", {"penalty_epochs": 2, "finetune_epochs": 2}),
                                         ("permdiag", {"p": 4, "epochs": 2}),
                                         ("pattern", {"prune_steps": 2, "finetune_epochs": 1})])
def test_whole_model_on_one_datapath(scheme, opts):
    array = ArrayConfig(2, 2)
    model, packed, data = _default(scheme, array, **opts)
    plan = plan_sequenced(model, packed, array)
    engine = SequencedEngine(plan)
    x = quantize_input(data.test_x[:2], model.input_scale)
    outs, stats = simulate_engine(engine, [x[i].numpy().ravel() for i in range(2)])
    gold = run_golden(model, x)[-1].numpy().reshape(2, -1)
    for i in range(2):
        got = outs[i].ravel()
        bad = np.nonzero(got != gold[i])[0]
        assert not len(bad), f"image {i}: logit {bad[0]} expected {gold[i][bad[0]]}, got {got[bad[0]]}"
        # the cycle model is exact and equals the per-layer ModelEngine's (same FSM per layer); a PermDNN layer
        # (its own engine, dispatched by the sequencer) skips zero inputs: its cycles depend on the image
        assert stats[i]["measured"] == stats[i]["cycles"] == plan.cycles(x[i].numpy().ravel())
    assert plan.cycle_model["total"] == plan_model(model, packed, array).cycle_model["total"]
    # one datapath kind per distinct PE: the first layer stays dense in every scheme but dense
    # (pattern: each layer has its own pattern table, hence its own datapath; its convs use the window feed and
    # its linear layer the channels feed: two feeders)
    assert plan.cycle_model["datapaths"] == {"dense": 1, "permdiag": 1, "pattern": 3}.get(scheme, 2)
    if scheme == "permdiag":
        assert len(engine.own) == 1 and len(plan.shared) == 2


def test_one_array_and_memories_for_all_layers():
    """The shared datapath builds the array once and lays the layers' ROMs end to end, word for word."""
    from amaranth.hdl import Fragment
    array = ArrayConfig(2, 2)
    model, packed, _ = _default("dense", array)
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
    assert plan.rom_bits == sum(pk.rom_bits for pk in packed.values())


def test_refuses_what_it_cannot_share():
    """Layers with lane-descriptor ROMs and layers with implicit rows (another feed) cannot share the control."""
    array = ArrayConfig(2, 2)
    model, packed, _ = _default("pattern", array, prune_steps=2, finetune_epochs=1)
    _, dense, _ = _default("dense", array)
    mixed = dict(packed, conv1=dense["conv1"])
    with pytest.raises(SparsynError, match=r"row feeds \['channels', 'lanes', 'window'\], some with lane descriptor"):
        plan_sequenced(model, mixed, array)
