"""``sparsyn infer --port sim:icarus|verilator``: the host code of ``sparsyn infer`` against the inference top converted
to Verilog, in a cocotb bench (UART at bit level); bit-exact logits, exact cycles, link faults; one-line refusals."""
import json
import os
import re

import pytest

from sparsyn.boards.infer import build_rtl, inference_design, run_infer
from sparsyn.sim.tools import have_simulator
from sparsyn.sw.testing import one_line_error as one_line, run_cli as sparsyn

needs_icarus = pytest.mark.skipif(have_simulator("icarus") is not None, reason=str(have_simulator("icarus")))
needs_verilator = pytest.mark.skipif(have_simulator("verilator") is not None, reason=str(have_simulator("verilator")))





@needs_icarus
def test_infer_on_icarus_is_bit_exact(dense_manifest, tmp_path):
    r = sparsyn("infer", "--board", "icebreaker", "--manifest", str(dense_manifest), "--port", "sim:icarus",
                "--images", "2", "--report", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert "via sim:icarus" in r.stdout and "every output bit-exact vs the golden model" in r.stdout
    rep = json.loads((tmp_path / "r.json").read_text())
    design = inference_design(dense_manifest, "icebreaker", log=lambda *a: None)
    assert rep["port"] == "sim:icarus" and rep["images"] == 2 and rep["bit_exact"]
    # every logit was compared with the golden model and every RUN's cycle count with the cycle model, image by
    # image, inside the bench (a mismatch fails the run)
    assert [row["cycles"] for row in rep["rows"]] == [design.plan.cycle_model["total"]] * 2


def test_unknown_and_missing_simulators_are_one_line(dense_manifest, tmp_path):
    line = one_line(sparsyn("infer", "--board", "icebreaker", "--manifest", str(dense_manifest), "--port", "sim:xyz"))
    assert "sim:xyz" in line and "sim, sim:amaranth, sim:icarus, sim:verilator" in line
    env = dict(os.environ, PATH=str(tmp_path))          # no iverilog / vvp on the PATH
    line = one_line(sparsyn("infer", "--board", "icebreaker", "--manifest", str(dense_manifest), "--port",
                            "sim:icarus", env=env))
    assert "Icarus Verilog not installed" in line and "apt-get install iverilog" in line


@pytest.mark.slow
@needs_verilator
def test_infer_on_verilator_is_bit_exact(dense_manifest):
    rep = run_infer(dense_manifest, "icebreaker", "sim:verilator", images=5, log=lambda *a: None)
    design = inference_design(dense_manifest, "icebreaker", log=lambda *a: None)
    assert rep["port"] == "sim:verilator" and rep["images"] == 5 and rep["bit_exact"]
    assert rep["cycles_per_image"] == design.plan.cycle_model["total"]


@needs_verilator
def test_activation_buffer_in_spram_on_verilator_is_bit_exact(dense_manifest):
    """--acts spram through the Verilog (the behavioural SPRAM model of each buffer copy): bit-exact, cycle-exact."""
    rep = run_infer(dense_manifest, "icebreaker", "sim:verilator", images=2, acts="spram", log=lambda *a: None)
    design = inference_design(dense_manifest, "icebreaker", acts="spram", log=lambda *a: None)
    assert design.acts == "spram" and rep["images"] == 2 and rep["bit_exact"]
    assert rep["cycles_per_image"] == design.plan.cycle_model["total"]


@needs_verilator
def test_pass_store_on_verilator_is_bit_exact(dense_row_manifest):
    """--weights passstore through the Verilog (the behavioural SPRAM of the pass store): bit-exact, cycle-exact."""
    rep = run_infer(dense_row_manifest, "icebreaker", "sim:verilator", images=2, weights="passstore",
                    log=lambda *a: None)
    design = inference_design(dense_row_manifest, "icebreaker", weights="passstore", log=lambda *a: None)
    assert design.weights_in == "passstore" and rep["images"] == 2 and rep["bit_exact"]
    assert rep["cycles_per_image"] == design.plan.cycle_model["total"]


@needs_icarus
def test_link_faults_on_the_verilog_are_answered_and_the_link_recovers(dense_manifest):
    """Through the Verilog of the inference top: a WRITE with a corrupted CRC (nothing written), garbage and a truncated
    frame each get their error frame; then the input reads back unchanged and IDENTIFY answers."""
    from sparsyn.sim.runner import run_bench
    design = inference_design(dense_manifest, "icebreaker", log=lambda *a: None)
    bld = build_rtl(design, "icarus", log=lambda *a: None)
    res = run_bench(bld, "sparsyn.sim.benches.bench_board_link",
                    {"host": "sparsyn.sim.benches.bench_board_link:link_faults", "divisor": design.divisor,
                     "clk_hz": design.board.clock_hz, "args": {"timeout_s": 0.01}}, waves_on_failure=False)
    out = res["result"]
    assert out["errors"] == ["BAD_CRC", "GARBAGE", "TRUNCATED"]
    assert out["readback_ok"] and out["design_hash"] == design.design_hash.hex()


def test_comb_logic_of_amaranth_verilog_settles_at_time_zero_in_icarus():
    """An FSM output that depends only on the state register (``ready = state == IDLE``) is an ``always @*`` block
    that Icarus (-g2012) never runs unless its trigger register changes at time 0 (the inference top's framer)."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from sparsyn.sim.runner import to_verilog
    from sparsyn.sim.time_zero import settle_at_time_zero

    class Toy(wiring.Component):
        go: In(1)
        ready: Out(1)

        def elaborate(self, platform):
            m = Module()
            with m.FSM():
                with m.State("IDLE"):
                    m.d.comb += self.ready.eq(1)
                    with m.If(self.go):
                        m.next = "BUSY"
                with m.State("BUSY"):
                    m.next = "IDLE"
            return m

    text, _ = to_verilog(Toy(), "toy")
    triggers = re.findall(r"reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+) ", text)
    assert triggers and "initial #0" not in text
    fixed = settle_at_time_zero(text)
    assert [f"initial #0 {t} = 1'h1;" in fixed for t in triggers] == [True] * len(triggers)


@needs_icarus
def test_a_model_without_labels_runs_whole_on_the_board_with_its_own_data(tmp_path):
    """The (tiny) MLPerf Tiny anomaly-detection autoencoder — ten Linear layers, compressed with its own data —
    on the simulated iCEBreaker through the Verilog: every output bit-exact, cycles exact, no accuracy (no labels);
    data of another shape is refused before the port is opened."""
    import numpy as np

    from sparsyn.sw.zoo import zoo_data
    data = zoo_data("ad-autoencoder-tiny", 200, 3)
    npz = tmp_path / "ad.npz"
    np.savez(npz, x=np.concatenate([data.train_x.numpy(), data.test_x.numpy()]).astype(np.float32))
    out = tmp_path / "ad"
    r = sparsyn("compress", "--model", "zoo:ad-autoencoder-tiny", "--data", str(npz), "--scheme", "dense",
                "--array", "2x2", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    r = sparsyn("infer", "--board", "icebreaker", "--manifest", str(out), "--port", "sim:icarus", "--images", "2",
                "--report", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    design = inference_design(out, "icebreaker", log=lambda *a: None)
    assert rep["bit_exact"] and rep["accuracy"] is None and "data without labels" in r.stdout
    assert len(design.plan.steps) == 10 and rep["link_bytes_per_image"] > 2 * 32
    assert [row["cycles"] for row in rep["rows"]] == [design.plan.cycle_model["total"]] * 2
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((20, 1, 8, 8), np.float32))
    line = one_line(sparsyn("infer", "--board", "icebreaker", "--manifest", str(out), "--port", "sim", "--data",
                            str(bad)))
    assert "the data's samples have shape (1, 8, 8), the model takes (32, 1, 1)" in line
