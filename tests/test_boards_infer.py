"""Inference on a board: ``sparsyn infer --port sim`` drives the inference top's RTL (UART at bit level) with the
same host code as a real board; bit-exact logits, exact cycles; identity, flash and build refusals."""
import dataclasses

import pytest

from sparsyn.boards.infer import check_identity, inference_design, run_infer
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.testing import one_line_error as one_line, run_cli as sparsyn





def test_infer_on_the_simulated_icebreaker_is_bit_exact(dense_manifest, tmp_path):
    r = sparsyn("infer", "--board", "icebreaker", "--manifest", str(dense_manifest), "--port", "sim",
                "--images", "2", "--report", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert "every output bit-exact vs the golden model" in r.stdout and "sequenced engine" in r.stdout
    import json
    rep = json.loads((tmp_path / "r.json").read_text())
    design = inference_design(dense_manifest, "icebreaker", log=lambda *a: None)
    assert rep["images"] == 2 and rep["bit_exact"]
    # the board's cycle counter equals the cycle model for each image (run_infer checks it image by image)
    assert rep["cycles_per_image"] == design.plan.cycle_model["total"]


def test_a_board_with_another_design_is_refused(dense_manifest):
    design = inference_design(dense_manifest, "icebreaker", log=lambda *a: None)
    check_identity(design.identity, design, "sim", dense_manifest)
    other = dataclasses.replace(design.identity, design_hash=b"\x01" * 8)
    with pytest.raises(SparsynError, match="runs another design.*re-flash it"):
        check_identity(other, design, "/dev/ttyUSB1", dense_manifest)
    # another baud rate is another bitstream
    assert inference_design(dense_manifest, "icebreaker", baud=115200, log=lambda *a: None).design_hash \
        != design.design_hash


def test_host_link_faults_are_answered_and_the_link_recovers(dense_manifest):
    """Through the inference top's real UART RTL: a corrupted WRITE is refused (and writes nothing), garbage and a
    truncated frame get error replies, and the next requests work."""
    from sparsyn.hw.inference import REGION_INPUT
    from sparsyn.sw import link_protocol as lp
    from sparsyn.sw.link_client import LinkClient
    design = inference_design(dense_manifest, "icebreaker", log=lambda *a: None)
    from sparsyn.sim.board_sim import AmaranthBoard
    board = AmaranthBoard(design.core(), divisor=design.divisor, clk_hz=design.board.clock_hz)
    client = LinkClient(board, timeout_s=0.01)
    client.write(REGION_INPUT, 0, bytes(range(16)))
    bad = bytearray(lp.write_request(REGION_INPUT, 0, b"\xff" * 16))
    bad[-1] ^= 0x40                                   # CRC corrupted
    board.write(bytes(bad))
    dec = lp.FrameDecoder()
    frames = [f for f in dec.feed(board.read(8, 0.01)) if isinstance(f, lp.Frame)]
    assert frames and frames[0].is_error and frames[0].error()[0] == lp.ErrorCode.BAD_CRC
    assert client.read(REGION_INPUT, 0, 16) == bytes(range(16))      # nothing was written
    board.write(b"\x00\x13\x37")                                      # garbage, then idle
    frames = [f for f in lp.FrameDecoder().feed(board.read(8, 0.01)) if isinstance(f, lp.Frame)]
    assert frames and frames[0].error()[0] == lp.ErrorCode.GARBAGE
    board.write(lp.read_request(REGION_INPUT, 0, 4)[:5])              # truncated frame
    frames = [f for f in lp.FrameDecoder().feed(board.read(8, 0.01)) if isinstance(f, lp.Frame)]
    assert frames and frames[0].error()[0] == lp.ErrorCode.TRUNCATED
    assert client.identify().design_hash == design.design_hash


def test_boards_without_uart_and_bad_ports_are_one_line(dense_manifest):
    line = one_line(sparsyn("build", "--board", "orangecrab-25f", "--manifest", str(dense_manifest)))
    assert "gateware USB-serial" in line and "--top selftest" in line
    line = one_line(sparsyn("infer", "--board", "icebreaker", "--manifest", str(dense_manifest), "--port",
                            "/dev/does-not-exist", "--images", "1"))
    assert "/dev/does-not-exist" in line
    line = one_line(sparsyn("infer", "--board", "icebreaker", "--manifest", str(dense_manifest), "--port", "sim",
                            "--baud", "6000000"))
    assert "baud 6000000" in line


def test_inference_top_fits_the_icebreaker(dense_manifest):
    """The fit check of the whole digits model on one shared datapath behind the host link (no toolchain)."""
    from sparsyn.boards.build import build_board
    from sparsyn.boards.fit import check_fit, memory_census
    from sparsyn.boards.platforms import get_board
    res = build_board("icebreaker", manifest=dense_manifest, top="inference", do_build=False, log=lambda *a: None)
    assert res["config"]["engine"] == "sequenced"
    design = inference_design(dense_manifest, "icebreaker", log=lambda *a: None)
    fit = check_fit(get_board("icebreaker").dev, memory_census(design.core()))
    assert fit["bram_blocks"] <= 30


def test_flash_uses_the_boards_programmer(tmp_path, monkeypatch):
    bit = tmp_path / "top.bin"
    bit.write_bytes(b"\x00\x01")
    env = dict(__import__("os").environ, ICEPROG=str(tmp_path / "no-such-iceprog"))
    line = one_line(sparsyn("flash", "--board", "icebreaker", "--bitstream", str(bit), env=env))
    assert "iceprog" in line and "not installed" in line and "apt install" in line
    fake = tmp_path / "fake-iceprog"
    fake.write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path / 'flashed'}\n")
    fake.chmod(0o755)
    env["ICEPROG"] = str(fake)
    r = sparsyn("flash", "--board", "icebreaker", "--bitstream", str(bit), env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "flashed").read_bytes() == b"\x00\x01"
    line = one_line(sparsyn("flash", "--board", "ulx3s-85f", "--bitstream", str(bit), env=env))
    assert ".bit" in line
    line = one_line(sparsyn("flash", "--board", "icebreaker", "--bitstream", str(tmp_path / "none.bin"), env=env))
    assert "does not exist" in line


def test_weights_in_spram_are_loaded_over_the_link(dense_manifest):
    """--weights spram: the board's weight store starts empty; the host writes the manifest's weight ROM words
    over the (simulated, bit-level) UART, then every logit is bit-exact."""
    rep = run_infer(dense_manifest, "icebreaker", "sim", images=1, weights="spram", log=lambda *a: None)
    design = inference_design(dense_manifest, "icebreaker", weights="spram", log=lambda *a: None)
    assert rep["weights_in"] == "spram" and rep["bit_exact"]
    from sparsyn.sw.manifest import load_manifest
    _, packed, _ = load_manifest(dense_manifest)
    words = sum(p.roms["weights"].depth for p in packed.values())
    assert rep["weight_bytes_loaded"] == len(design.weight_image) == words * 2     # 16-bit words: one SPRAM
    # EBR and SPRAM builds are different bitstreams
    assert design.design_hash != inference_design(dense_manifest, "icebreaker", weights="ebr",
                                                  log=lambda *a: None).design_hash
    with pytest.raises(SparsynError, match="needs the sequenced engine on an iCE40UP board"):
        inference_design(dense_manifest, "ulx3s-85f", weights="spram", log=lambda *a: None)


def test_activation_scratch_in_spram(dense_manifest):
    """--scratch spram: the shared output buffer (every layer's outputs, the next layer's input) is an iCE40UP SPRAM;
    bit-exact and cycle-exact through the simulated board, counted as a SPRAM by the fit check (one EBR less),
    another bitstream; a board without SPRAM refuses it."""
    from sparsyn.boards.fit import check_fit, memory_census
    from sparsyn.boards.platforms import get_board
    rep = run_infer(dense_manifest, "icebreaker", "sim", images=1, scratch="spram", log=lambda *a: None)
    assert rep["bit_exact"] and rep["images"] == 1
    dev = get_board("icebreaker").dev
    both = {s: inference_design(dense_manifest, "icebreaker", weights="ebr", scratch=s, log=lambda *a: None)
            for s in ("ebr", "spram")}
    fits = {s: check_fit(dev, memory_census(d.core())) for s, d in both.items()}
    assert (fits["spram"]["spram_blocks"], fits["ebr"]["spram_blocks"]) == (1, 0)
    assert fits["spram"]["bram_blocks"] == fits["ebr"]["bram_blocks"] - 1
    assert both["spram"].design_hash != both["ebr"].design_hash
    # auto keeps everything in block RAM while it fits
    assert inference_design(dense_manifest, "icebreaker", log=lambda *a: None).scratch == "ebr"
    with pytest.raises(SparsynError, match="--scratch spram needs the sequenced engine on an iCE40UP board"):
        inference_design(dense_manifest, "ulx3s-85f", scratch="spram", log=lambda *a: None)


def test_activation_buffer_in_spram(dense_manifest):
    """--acts spram: the activation buffer of the im2col feed (the running layer's input, one copy per lane) is one
    iCE40UP SPRAM per copy; bit-exact and cycle-exact through the simulated board (run_infer checks every image's
    cycles against the model), counted as SPRAMs by the fit check, another bitstream; auto keeps it in block RAM
    while the design fits there; refused on a board without SPRAM and for a model without the im2col feed."""
    from sparsyn.boards.fit import check_fit, memory_census
    from sparsyn.boards.platforms import get_board
    rep = run_infer(dense_manifest, "icebreaker", "sim", images=1, acts="spram", log=lambda *a: None)
    assert rep["bit_exact"] and rep["images"] == 1
    dev = get_board("icebreaker").dev
    both = {a: inference_design(dense_manifest, "icebreaker", weights="ebr", scratch="ebr", acts=a,
                                log=lambda *a: None) for a in ("ebr", "spram")}
    assert rep["cycles_per_image"] == both["spram"].plan.cycle_model["total"]
    fits = {a: check_fit(dev, memory_census(d.core())) for a, d in both.items()}
    rows, lanes = both["spram"].plan.array.rows, both["spram"].plan.array.lanes
    copies = [m for m in fits["spram"]["memories"] if ".act.amem" in m["path"]]
    assert len(copies) == rows * lanes and all(m["kind"] == "spram" for m in copies)
    assert (fits["spram"]["spram_blocks"], fits["ebr"]["spram_blocks"]) == (rows * lanes, 0)
    assert fits["spram"]["bram_blocks"] < fits["ebr"]["bram_blocks"]
    assert both["spram"].design_hash != both["ebr"].design_hash
    # the digest of a design without the option is the one it had before the option existed
    assert both["ebr"].design_hash == inference_design(dense_manifest, "icebreaker", weights="ebr", scratch="ebr",
                                                       log=lambda *a: None).design_hash
    assert inference_design(dense_manifest, "icebreaker", log=lambda *a: None).acts == "ebr"
    with pytest.raises(SparsynError, match="--acts spram needs the sequenced engine on an iCE40UP board"):
        inference_design(dense_manifest, "ulx3s-85f", acts="spram", log=lambda *a: None)


def test_pass_store_placement(dense_row_manifest, dense_manifest):
    """--weights passstore (a 1-row array): the weights, lane descriptors and pass table as per-pass records in one
    SPRAM the host loads; bit-exact and cycle-exact through the simulated board with the cycles of the ROMs in block
    RAM; the fit check counts one SPRAM and no weight / lane / pass-table block RAM; another bitstream; auto keeps
    the block RAMs while they fit; refused for a 2-row array and on a board without SPRAM."""
    from sparsyn.boards.fit import check_fit, memory_census
    from sparsyn.boards.platforms import get_board
    quiet = dict(log=lambda *a: None)
    rep = run_infer(dense_row_manifest, "icebreaker", "sim", images=1, weights="passstore", **quiet)
    both = {w: inference_design(dense_row_manifest, "icebreaker", weights=w, scratch="ebr", acts="ebr", **quiet)
            for w in ("ebr", "passstore")}
    assert rep["bit_exact"] and rep["images"] == 1 and rep["weights_in"] == "passstore"
    assert rep["cycles_per_image"] == both["ebr"].plan.cycle_model["total"]
    assert rep["weight_bytes_loaded"] == len(both["passstore"].weight_image) > 0
    fit = check_fit(get_board("icebreaker").dev, memory_census(both["passstore"].core()))
    paths = [m["path"] for m in fit["memories"]]
    assert fit["spram_blocks"] == 1 and any(".pstore.store.spram_0" in p for p in paths)
    assert not any(p.endswith(("control.wmem", "control.lmem", "control.ptab")) for p in paths), paths
    assert both["passstore"].design_hash != both["ebr"].design_hash
    assert inference_design(dense_row_manifest, "icebreaker", **quiet).weights_in == "ebr"
    with pytest.raises(SparsynError, match="passstore needs a 1-row array"):
        inference_design(dense_manifest, "icebreaker", weights="passstore", **quiet)
    with pytest.raises(SparsynError, match="--weights passstore needs the sequenced engine on an iCE40UP board"):
        inference_design(dense_row_manifest, "ulx3s-85f", weights="passstore", **quiet)


@pytest.mark.slow
def test_whole_digits_model_builds_for_the_icebreaker_fully_timed(dense_manifest, tmp_path):
    """The UP5K build of the inference top (whole digits model, one shared datapath, UART link): it fits, every
    path is timed (no combinational DSP) and the timed Fmax reaches the 30 MHz target."""
    from sparsyn.boards.build import build_board
    rep = build_board("icebreaker", manifest=dense_manifest, top="inference", out=tmp_path / "b",
                      progress=False, log=lambda *a: None)
    clock = next(iter(rep["fmax"].values()))
    assert "comb_dsp" not in clock, clock
    assert clock["achieved_mhz"] >= 30, clock
    assert rep["resources"]["lut"]["used"] <= 5280 and (tmp_path / "b" / "top.bin").is_file()


def test_board_bench_refusals():
    """``sparsyn bench --boards --board NAME``: a board without configurations, and --board without --boards."""
    line = one_line(sparsyn("bench", "--boards", "--board", "orangecrab-25f"))
    assert "configurations for icebreaker, ulx3s-85f" in line
    line = one_line(sparsyn("bench", "--board", "icebreaker"))
    assert "--board applies to the board benchmark (--boards)" in line
