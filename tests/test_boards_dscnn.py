"""Issue 15's on-board goal, end to end (slow: a full-size compress, a UP5K build and a Verilator run of the board):
the full-size MLPerf Tiny DS-CNN, compressed with the tight scheme for a 1x3 array, is placed on the iCEBreaker
(pass store, scratch and activation buffer in SPRAM), its bitstream fits the iCE40UP5K's logic, block RAM, SPRAM and
DSPs as nextpnr places it, and the simulated board runs it bit-exact against the golden model in as many cycles per
inference as the cycle model says, at least 10x fewer than CFU-Playground's kws_micro_accel (25.2 M)."""
import json

import pytest

from sparsyn.sim.tools import have_simulator
from sparsyn.sw.cli import main

#: What the test compresses (the design point in README.md, "DS-CNN on the iCEBreaker").
ARRAY, OPTS = "1x3", ("alpha=2", "dense_first=0")
CFU_CYCLES = 25.2e6


@pytest.mark.slow
def test_dscnn_runs_on_the_icebreaker(tmp_path):
    reason = have_simulator("verilator")
    if reason:
        pytest.skip(reason)
    from sparsyn.boards.model_bench import board_fit, network_cycles
    from sparsyn.boards.toolchain import check_toolchain
    from sparsyn.sw.manifest import load_manifest, resolve_array
    m = tmp_path / "ds"
    assert main(["compress", "--model", "zoo:kws-dscnn", "--scheme", "tight", "--array", ARRAY,
                 *[a for o in OPTS for a in ("--opt", o)], "--out", str(m), "--quiet"]) == 0
    fit = board_fit(m)
    assert fit["fits"], fit
    assert fit["placement"] == {"weights": "passstore", "scratch": "spram", "acts": "spram"}
    model, packed, doc = load_manifest(m)
    cycles = network_cycles(model, packed, resolve_array(doc, None))["cycles"]
    assert cycles * 10 <= CFU_CYCLES
    # the bitstream: every resource within the device as nextpnr placed it
    check_toolchain("ice40")
    assert main(["build", "--board", "icebreaker", "--manifest", str(m), "--out", str(tmp_path / "b")]) == 0
    res = json.loads((tmp_path / "b" / "report.json").read_text())["resources"]
    for kind in ("lut", "bram", "spram", "dsp"):
        assert 0 < res[kind]["used"] <= res[kind]["available"], (kind, res[kind])
    assert res["dsp"]["used"] >= 3 + 2            # the PEs and the requant multipliers are in DSPs, not LUTs
    # the simulated board: bit-exact, the cycle model's cycles
    assert main(["infer", "--board", "icebreaker", "--manifest", str(m), "--port", "sim:verilator", "--images", "2",
                 "--report", str(tmp_path / "infer.json")]) == 0
    rep = json.loads((tmp_path / "infer.json").read_text())
    assert rep["bit_exact"] and rep["images"] == 2
    assert rep["cycles_per_image"] == cycles
