"""Real toolchain runs: one small iCE40 build (default suite, ``fpga``), yosys-only synthesis, and the
big builds / sweep behind ``slow``."""
import json

import numpy as np
import pytest
from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparsyn.boards.build import build_board, build_core
from sparsyn.boards.report import format_report, parse_nextpnr_report
from sparsyn.boards.selftest import SelfTest
from sparsyn.boards.synth import synthesize_component
from sparsyn.hw.engines import layer_engine
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import run_layer
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.testing import pack_layer, random_input, random_quant_layer


def small_core(seed=5):
    rng = np.random.default_rng(seed)
    layer = random_quant_layer(rng, "conv", 2, 4, 4, 2, kernel=3, padding=1)
    x = random_input(rng, layer)
    engine = layer_engine(layer, pack_layer(layer, array=ArrayConfig(2, 2)))
    return SelfTest(engine, x.reshape(-1), run_layer(layer, x).reshape(-1))


@pytest.mark.fpga
def test_small_ice40_build_produces_bitstream_report_and_logs(tmp_path):
    out = tmp_path / "ice"
    report = build_core("icebreaker", small_core(), out, config={"array": "2x2"}, progress=False,
                        log=lambda *_: None)
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    bitstream = out / "top.bin"
    assert report["bitstream"] == str(bitstream) and bitstream.stat().st_size > 50_000
    for log in ("top.rpt", "top.tim", "build.log", "steps.log", "yosys.console.log"):
        assert (out / log).exists(), log
    res = report["resources"]
    for key in ("lut", "lut4", "ff", "bram", "spram", "dsp"):
        assert 0 <= res[key]["used"] <= res[key]["available"], key
    assert res["lut"]["available"] == 5280 and res["bram"]["available"] == 30 and res["spram"]["available"] == 4
    assert res["lut"]["used"] > 100 and res["ff"]["used"] > 50
    # the fit check is an upper bound of what yosys actually used
    assert 2 <= res["bram"]["used"] <= report["fit_estimate"]["bram_blocks"]
    (clock, f), = report["fmax"].items()
    assert f["constraint_mhz"] == pytest.approx(12.0, abs=0.01) and f["achieved_mhz"] > 0
    assert f["meets_board_clock"] == (f["achieved_mhz"] >= 12.0)
    # the UP5K goal; not claimed while paths through combinational DSPs are untimed
    assert f["target_mhz"] == 45.0 and f["meets_target"] == (f["achieved_mhz"] >= 45.0 and "comb_dsp" not in f)
    cp = f["critical_path"]  # nextpnr's worst path; Fmax is its inverse
    assert cp["from"].startswith("core") and cp["logic_levels"] > 0
    assert f["achieved_mhz"] == pytest.approx(1000.0 / cp["delay_ns"], rel=0.01)
    assert set(report["times_s"]) == {"yosys", "nextpnr-ice40", "icepack", "total"}
    assert report["times_s"]["total"] >= report["times_s"]["nextpnr-ice40"] > 0
    text = format_report(report)
    assert "logic cells" in text and "EBR" in text and "Fmax" in text and str(bitstream) in text
    # the report figures are nextpnr's own
    pnr = parse_nextpnr_report(out / "top.report.json", "ice40")
    assert pnr["resources"]["lut"]["used"] == res["lut"]["used"]


class Mac(wiring.Component):
    a: In(signed(8))
    b: In(signed(8))
    y: Out(signed(20))

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.y.eq(self.y + self.a * self.b)
        return m


class AddSub(wiring.Component):
    """A ternary-style PE: add, subtract or skip — must synthesize with no multiplier."""
    x: In(signed(8))
    code: In(2)
    y: Out(signed(20))

    def elaborate(self, platform):
        m = Module()
        with m.Switch(self.code):
            with m.Case(1):
                m.d.sync += self.y.eq(self.y + self.x)
            with m.Case(2):
                m.d.sync += self.y.eq(self.y - self.x)
        return m


@pytest.mark.fpga
def test_synthesize_component_counts_luts_dsps_and_multipliers():
    lut_mul = synthesize_component(Mac(), "ice40", dsp=False)
    dsp_mul = synthesize_component(Mac(), "ice40", dsp=True)
    assert lut_mul["muls"] == [[8, 8]] and lut_mul["dsps"] == 0 and lut_mul["luts"] > 50
    assert dsp_mul["dsps"] == 1 and dsp_mul["cells"]["SB_MAC16"] == 1 and dsp_mul["luts"] < lut_mul["luts"]
    ecp5 = synthesize_component(Mac(), "ecp5")
    assert ecp5["cells"].get("MULT18X18D") == 1
    ternary = synthesize_component(AddSub(), "ice40", dsp=True)
    assert ternary["muls"] == [] and ternary["dsps"] == 0 and ternary["luts"] > 0 and ternary["ffs"] == 20
    with pytest.raises(SparsynError, match="unknown FPGA family 'xilinx'"):
        synthesize_component(Mac(), "xilinx")


def test_parse_nextpnr_report_maps_cells_and_strips_global_net_prefix(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({
        "utilization": {"TRELLIS_COMB": {"used": 120, "available": 83640}, "TRELLIS_FF": {"used": 80, "available": 83640},
                        "DP16KD": {"used": 3, "available": 208}, "MULT18X18D": {"used": 4, "available": 156}},
        "fmax": {"$glbnet$cd_sync.clk": {"achieved": 71.234, "constraint": 25.0},
                 "$PACKER_GND_NET_$glb_clk": {"achieved": 313.0, "constraint": 25.0}}}))
    r = parse_nextpnr_report(path, "ecp5")
    assert r["resources"]["lut"] == {"used": 120, "available": 83640, "cell": "TRELLIS_COMB"}
    assert r["resources"]["bram"]["used"] == 3 and r["resources"]["dsp"]["used"] == 4
    assert r["fmax"] == {"cd_sync.clk": {"achieved_mhz": 71.23, "constraint_mhz": 25.0}}
    assert r["comb_dsp"] == {}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SparsynError, match="cannot read the nextpnr report"):
        parse_nextpnr_report(tmp_path / "bad.json", "ecp5")


def _step(cell_from, cell_to, delay):
    return {"type": "logic", "delay": delay, "from": {"cell": cell_from}, "to": {"cell": cell_to}}


def test_paths_through_combinational_dsps_are_flagged_untimed(tmp_path):
    """nextpnr splits paths at combinational SB_MAC16s (pseudo clock $PACKER_GND_NET): the report must not
    claim the target on nextpnr's Fmax alone."""
    from sparsyn.boards.platforms import get_board
    from sparsyn.boards.report import format_report, make_report
    gnd = "posedge $PACKER_GND_NET_$glb_clk"
    (tmp_path / "top.report.json").write_text(json.dumps({
        "utilization": {"ICESTORM_LC": {"used": 100, "available": 5280}},
        "fmax": {"cd_sync.clk": {"achieved": 50.0, "constraint": 45.0}},
        "critical_paths": [
            {"from": "posedge cd_sync.clk", "to": "posedge cd_sync.clk", "path": [_step("a_LC", "b_LC", 20.0)]},
            {"from": "posedge cd_sync.clk", "to": gnd, "path": [_step("a_LC", "m_DSP", 4.0), _step("a", "m", 5.0)]},
            {"from": gnd, "to": "posedge cd_sync.clk", "path": [_step("m_DSP", "p_LC", 12.0)]}]}))
    (tmp_path / "top.stat.json").write_text(json.dumps({"design": {"num_cells_by_type": {"SB_LUT4": 90}}}))
    rep = make_report(get_board("icebreaker"), tmp_path, "top", {}, {}, {}, {"yosys": 1.0}, 45.0)
    clk = rep["fmax"]["cd_sync.clk"]
    assert clk["achieved_mhz"] == 50.0 and clk["meets_board_clock"]
    assert clk["comb_dsp"]["into_ns"] == 9.0 and clk["comb_dsp"]["out_of_ns"] == 12.0
    assert clk["comb_dsp"]["bound_mhz"] == round(1000 / 21.0, 2)
    assert clk["meets_target"] is False
    text = format_report(rep)
    assert "not shown (DSP paths untimed)" in text and "9.0 ns into and 12.0 ns out of them" in text


@pytest.mark.slow
@pytest.mark.fpga
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_default_model_builds_for_the_issue_boards(board, tmp_path):
    report = build_board(board, out=tmp_path / board, progress=False)
    assert report["bitstream"] and report["config"]["model"] == "default-digits"
    assert all(f["meets_board_clock"] for f in report["fmax"].values())


@pytest.mark.slow
@pytest.mark.fpga
def test_quick_fpga_sweep(tmp_path):
    from sparsyn.boards.bench import run_fpga_bench
    doc = run_fpga_bench(boards={"icebreaker": ["2x2"], "ulx3s-85f": ["2x2", "4x4"]}, out=tmp_path,
                         progress=False, log=lambda *_: None)
    rows = [r for r in doc["rows"] if r["status"] == "ok"]
    assert len(rows) == 3 and all(r["fmax_mhz"] > 0 and r["luts"] > 0 for r in rows)
    assert (tmp_path / "fpga-bench.json").exists()


def test_builtin_dfu_suffix_matches_dfu_util(tmp_path):
    import shutil
    import subprocess
    import sys
    from sparsyn.boards.dfu_suffix import dfu_suffix, has_suffix
    data = bytes(range(256)) * 37 + b"\x00\xff"
    ours = dfu_suffix(data, 0x1209, 0x5AF0)
    assert len(ours) == len(data) + 16 and ours[:len(data)] == data and has_suffix(ours)
    assert not has_suffix(data) and not has_suffix(ours[:-1] + bytes([ours[-1] ^ 1]))
    path = tmp_path / "top.bit"
    path.write_bytes(data)
    subprocess.run([sys.executable, "-m", "sparsyn.boards.dfu_suffix", "-v", "1209", "-p", "5af0", "-a", str(path)],
                   check=True)
    assert path.read_bytes() == ours
    if shutil.which("dfu-suffix"):  # dfu-util's own tool, when installed, must agree byte for byte
        ref = tmp_path / "ref.bit"
        ref.write_bytes(data)
        subprocess.run(["dfu-suffix", "-v", "1209", "-p", "5af0", "-a", str(ref)], check=True, capture_output=True)
        assert ref.read_bytes() == ours


def test_overfull_placement_is_one_line_with_the_builds_advice(tmp_path):
    """A placement that overfills the device (faked nextpnr: its log says so, it exits 1) is refused in one line
    naming the cells over and the advice the build passes (e.g. fewer multipliers per PE)."""
    import os

    from sparsyn.boards.toolchain import FIT_ADVICE, run_build_script
    from sparsyn.sw.errors import SparsynError
    fake = tmp_path / "fake-nextpnr"
    fake.write_text("#!/bin/sh\nprintf 'Info: Device utilisation:\\nInfo:  ICESTORM_LC:  11019/ 5280   208%%\\n"
                    "ERROR: Unable to place cell\\n' > top.tim\nexit 1\n")
    ok = tmp_path / "fake-ok"
    ok.write_text("#!/bin/sh\nexit 0\n")
    for f in (fake, ok):
        f.chmod(0o755)
    build = tmp_path / "build"
    build.mkdir()
    (build / "build_top.sh").write_text('"$YOSYS" -q\n"$NEXTPNR_ICE40" --up5k || exit 1\n"$ICEPACK"\n')
    env = {**os.environ, "YOSYS": str(ok), "NEXTPNR_ICE40": str(fake), "ICEPACK": str(ok)}
    for advice in (FIT_ADVICE, "use fewer multipliers per PE"):
        with pytest.raises(SparsynError) as err:
            run_build_script(build, "top", "ice40", progress=False, environ=env, fit_advice=advice)
        msg = str(err.value)
        assert "\n" not in msg and "placement needs 11019 ICESTORM_LC but the device has 5280" in msg
        assert msg.endswith(advice)
