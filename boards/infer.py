"""Inference on a board: the inference top (engine behind the UART host link) and the host side of ``sparsyn infer``.

The same host code talks to a real board (``--port /dev/ttyUSB1``: pyserial) and to the RTL of the same top in
simulation (``--port sim``: :class:`sparsyn.sim.board_sim.AmaranthBoard`; ``--port sim:icarus`` / ``sim:verilator``:
the top converted to Verilog, :class:`sparsyn.sim.board_sim.CocotbBoard` in a cocotb bench; the UART at bit level).
Per image it writes the quantized input into the INPUT region, sends RUN (the reply carries the engine's cycles),
reads the OUTPUT region and checks every element against the golden model, which decodes the same ROM files.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import io

from sparsyn.sw.errors import SparsynError

from .platforms import Board, get_board

#: Default UART rate of the inference top (12 MHz / 12 and 25 MHz / 25: exact divisors on iCEBreaker and ULX3S).
DEFAULT_BAUD = 1_000_000
#: Largest frame payload the inference top accepts (its WRITE buffer, bytes).
MAX_PAYLOAD = 256


def board_uart(board: Board) -> None:
    """Refuse (one line) a board without a UART resource for the host link."""
    if board.name.startswith("orangecrab"):
        raise SparsynError(f"board {board.name} has no UART: its USB port needs a gateware USB-serial, which "
                           "sparsyn does not have yet; use --top selftest, or an iCEBreaker / ULX3S for inference")


def link_divisor(board: Board, baud: int) -> int:
    from sparsyn.hw.uart import uart_divisor
    return uart_divisor(board.clock_hz, baud)


@dataclass
class InferenceDesign:
    """Everything the build and the host agree on: the engine's plan, the identity and the link settings."""
    board: Board
    baud: int
    divisor: int
    engine_kind: str
    plan: object
    identity: object
    design_hash: bytes
    model_hash: bytes
    note: str = ""
    #: where the shared datapath's weights are: ``"ebr"`` (in the bitstream) or ``"spram"`` (loaded by the host)
    weights_in: str = "ebr"
    #: where the activation scratch (the shared output buffer) is: ``"ebr"`` or ``"spram"``
    scratch: str = "ebr"
    #: where the activation buffer (the running layer's input image, one copy per lane) is: ``"ebr"`` or ``"spram"``
    acts: str = "ebr"

    def core(self):
        """A fresh InferenceCore (engine + host link) of this design."""
        from sparsyn.hw.inference import InferenceCore
        return InferenceCore(_build_engine(self.engine_kind, self.plan, self.weights_in, self.scratch, self.acts),
                             self.identity, divisor=self.divisor)

    @property
    def weight_image(self) -> bytes:
        """The bytes the host writes into the SPRAM weight store or pass store (empty with the weights in EBR)."""
        if self.weights_in == "passstore":
            from sparsyn.hw.pass_store import pass_store_shape
            from sparsyn.hw.spram import spram_image
            words, width, _ = pass_store_shape(self.plan.shared)
            return spram_image(words, width)
        if self.weights_in != "spram":
            return b""
        from sparsyn.hw.control import weight_store_shape
        from sparsyn.hw.spram import spram_image
        words, width, _ = weight_store_shape(self.plan.shared)
        return spram_image(words, width)


def _build_engine(kind: str, plan, weights_in: str = "ebr", scratch: str = "ebr", acts: str = "ebr"):
    if kind == "sequenced":
        from sparsyn.hw.sequenced_engine import SequencedEngine
        return SequencedEngine(plan, weights_in=weights_in, scratch=scratch, acts=acts)
    from sparsyn.hw.model_engine import ModelEngine
    return ModelEngine(plan)


def plan_engine(model, packed, array=None, descriptor=None, manifest=None):
    """The whole-model engine for a board: the sequenced engine (one shared datapath), its per-layer values from
    the manifest's ``descriptor`` table; a model it cannot share yet falls back to the per-layer ModelEngine.
    Returns ``(kind, plan, note)``."""
    from sparsyn.hw.model_engine import plan_model
    from sparsyn.hw.sequenced_engine import plan_sequenced
    try:
        plan = plan_sequenced(model, packed, array, descriptor=descriptor)
    except SparsynError as err:
        if descriptor is not None:          # the table is the manifest's: a mismatch is an error, not a fallback
            raise
        note = str(err)
    else:
        if descriptor is None and plan.descriptor.fields and manifest is not None:
            raise SparsynError(f"manifest {manifest} has no descriptor table (the per-layer table the sequenced "
                               "engine reads; written by 'sparsyn compress' since this version); re-run "
                               "'sparsyn compress'")
        return "sequenced", plan, ""
    return "per-layer", plan_model(model, packed, array), note


def design_hash(doc: dict, *, board: str, baud: int, engine: str, weights_in: str = "ebr",
                scratch: str = "ebr", acts: str = "ebr") -> bytes:
    """The 8-byte digest a board's inference bitstream answers IDENTIFY with: the manifest's seal, the board,
    the baud rate, the engine, where weights, scratch and activation buffer are, and the sparsyn sources (a
    bitstream from other sources may be other RTL)."""
    from .sweep import source_hash
    # a placement in EBR beside the weights is left out: the digests of the designs from before it existed stay
    place = {"weights": weights_in, **({"scratch": scratch} if scratch != "ebr" else {}),
             **({"acts": acts} if acts != "ebr" else {})}
    text = json.dumps({"seal": doc.get("seal"), "board": board, "baud": int(baud), "engine": engine,
                       **place, "top": "inference", "source": source_hash()}, sort_keys=True)
    return hashlib.sha256(text.encode()).digest()[:8]


def inference_design(manifest, board: str, *, baud: int = DEFAULT_BAUD, array=None, weights: str = "auto",
                     scratch: str = "auto", acts: str = "auto", log=print) -> InferenceDesign:
    """Plan the inference top of ``manifest`` for ``board`` (one-line refusals; nothing is built). ``weights``:
    ``ebr`` (in the bitstream), ``spram`` (iCE40UP: loaded by the host over the link from the same ROM files),
    ``passstore`` (iCE40UP, 1-row array: see below) or ``auto``; ``scratch`` (the activation scratch: the shared output buffer): ``ebr``, ``spram`` (iCE40UP) or
    ``auto``; ``acts`` (the activation buffer of the ``lanes`` feed: the running layer's input image, one copy per
    lane): ``ebr``, ``spram`` (iCE40UP: one SPRAM per copy) or ``auto``. With ``auto`` the first placement whose
    memories fit the board is taken, in the order: everything in EBR, the weights in SPRAM, the scratch in SPRAM,
    both in SPRAM; then the same four with the activation buffer in SPRAM; then, for a 1-row array, the same four
    with ``weights`` ``passstore`` (the weights, lane descriptors and pass table as per-pass records in one SPRAM the
    host loads: :mod:`sparsyn.hw.pass_store`)."""
    from sparsyn.hw.inference import inference_identity
    from sparsyn.sw.manifest import load_manifest, resolve_array
    b = get_board(board)
    board_uart(b)
    if weights not in ("auto", "ebr", "spram", "passstore"):
        raise SparsynError(f"--weights must be auto, ebr, spram or passstore, not {weights!r}")
    if scratch not in ("auto", "ebr", "spram"):
        raise SparsynError(f"--scratch must be auto, ebr or spram, not {scratch!r}")
    if acts not in ("auto", "ebr", "spram"):
        raise SparsynError(f"--acts must be auto, ebr or spram, not {acts!r}")
    divisor = link_divisor(b, baud)
    model, packed, doc = load_manifest(Path(manifest))
    arr = resolve_array(doc, array)
    from sparsyn.hw.descriptor import load_table
    kind, plan, note = plan_engine(model, packed, arr, load_table(Path(manifest), doc), manifest=manifest)
    if note:
        log(f"engine: per-layer ModelEngine ({note})")
    for what, where in (("weights", weights), ("scratch", scratch), ("acts", acts)):
        if where in ("spram", "passstore") and (kind != "sequenced" or not b.dev.spram_blocks):
            raise SparsynError(f"--{what} {where} needs the sequenced engine on an iCE40UP board ({b.name}: "
                               f"{b.dev.spram_blocks} SPRAMs, engine {kind}); use --{what} ebr")
    # the activation buffer exists only for the layers fed by lanes (im2col); the other feeds have banked images
    lanes_fed = [p for p in plan.shared if p.feed == "lanes"] if kind == "sequenced" else []
    if acts == "spram" and not lanes_fed:
        raise SparsynError(f"--acts spram places the activation buffer of the 'lanes' row feed, which no layer of "
                           f"{manifest} uses; use --acts ebr")
    mh = bytes.fromhex(str(doc.get("seal", "")).split(":")[-1][:16] or "00")
    earr = plan.array if kind == "sequenced" else plan.segments[0].engine.array

    def design(where: str, scratch_in: str = "ebr", acts_in: str = "ebr") -> InferenceDesign:
        from sparsyn.hw.spram import check_spram_store
        if where == "spram":
            from sparsyn.hw.control import weight_store_shape
            words, width, _ = weight_store_shape(plan.shared)
            check_spram_store(width, len(words), b.dev.spram_blocks)
        if where == "passstore":
            from sparsyn.hw.pass_store import pass_store_layout
            pass_store_layout(plan.shared)
        if scratch_in == "spram":
            check_spram_store(8, max(p.out_elements for p in plan.shared), b.dev.spram_blocks)
        if acts_in == "spram":
            check_spram_store(8, max(p.in_elements for p in lanes_fed), b.dev.spram_blocks)
        dh = design_hash(doc, board=b.name, baud=baud, engine=kind, weights_in=where, scratch=scratch_in,
                         acts=acts_in)
        d = InferenceDesign(b, int(baud), divisor, kind, plan, None, dh, mh, note, where, scratch_in, acts_in)
        d.identity = inference_identity(design_hash=dh, model_hash=mh, array=earr,
                                        in_elements=_in_elements(kind, plan), out_elements=_out_elements(kind, plan),
                                        max_payload=MAX_PAYLOAD, weight_bytes=len(d.weight_image))
        return d

    auto = kind == "sequenced" and b.dev.spram_blocks
    options = [(w, s, a) for a in ("ebr", "spram") for s in ("ebr", "spram") for w in ("ebr", "spram")
               if (weights == "auto" and auto) or w == weights.replace("auto", "ebr")
               if (scratch == "auto" and auto) or s == scratch.replace("auto", "ebr")
               if (acts == "auto" and auto and lanes_fed) or a == acts.replace("auto", "ebr")]
    # the pass store (weights, lane descriptors and pass table in one SPRAM) after those, for a 1-row array
    if weights == "passstore" or (weights == "auto" and auto and plan.array.rows == 1):
        options += [("passstore", s, a) for a in ("ebr", "spram") for s in ("ebr", "spram")
                    if (scratch == "auto" and auto) or s == scratch.replace("auto", "ebr")
                    if (acts == "auto" and auto and lanes_fed) or a == acts.replace("auto", "ebr")]
    if weights == "passstore":
        options = [o for o in options if o[0] == "passstore"]
    if len(options) == 1:
        return design(*options[0])
    from .fit import check_fit, memory_census
    first_err = None
    for w, s, a in options:
        try:
            d = design(w, s, a)
            check_fit(b.dev, memory_census(d.core()), where=f"the {b.device} on {b.name}")
        except SparsynError as err:
            first_err = first_err or err
            continue
        if (w, s, a) != options[0]:
            weights_what = ("the weights, lane descriptors and pass table (one pass store, loaded over the host "
                            "link)" if w == "passstore" else "the weights (loaded over the host link)")
            moved = " and ".join(what for what, where in ((weights_what, "ebr" if w == "ebr" else "spram"),
                                                          ("the activation scratch", s),
                                                          ("the activation buffer", a)) if where == "spram")
            log(f"memories: {moved} in SPRAM, the block RAMs do not hold everything ({first_err})")
        return d
    raise first_err


def _in_elements(kind, plan) -> int:
    return plan.in_elements if kind == "sequenced" else math.prod(plan.model.input_shape)


def _out_elements(kind, plan) -> int:
    return plan.out_elements if kind == "sequenced" else plan.segments[-1].out_elements


class InferenceTop(Elaboratable):
    """A board's inference top: the :class:`~sparsyn.hw.inference.InferenceCore` on the board clock, its UART on
    the board's ``uart`` resource (ULX3S: with ``uart_tx_enable`` driven high), the pass LED blinking while idle
    (alive) and on while a RUN is in progress, the fail LED unused."""

    def __init__(self, board: Board, core):
        self.board, self.core = board, core

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        blink = Signal(max(1, math.ceil(math.log2(self.board.clock_hz / 2))))
        m.d.sync += blink.eq(blink + 1)
        if platform is None:
            return m
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        # the UART receiver synchronizes rx itself; tx comes from a register that idles high
        m.submodules.rx_buf = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx.i), tx.o.eq(core.tx)]
        try:
            en = platform.request("uart_tx_enable", 0, dir="-")
        except Exception:       # only the ULX3S has one
            en = None
        if en is not None:
            m.submodules.tx_en = buf = io.Buffer("o", en)
            m.d.comb += buf.o.eq(1)
        resource, number, sub = self.board.pass_led
        port = platform.request(resource, number, dir="-")
        port = getattr(port, sub) if sub else port
        m.submodules.led = led = io.Buffer("o", port)
        m.d.comb += led.o.eq(core.running | blink[-1])
        return m


# ---- host side ----------------------------------------------------------------------------------------------------
#: The simulated boards ``--port`` takes: Amaranth's simulator in this process, or a cocotb bench (Icarus, Verilator).
SIM_PORTS = ("sim", "sim:amaranth", "sim:icarus", "sim:verilator")


def rtl_simulator(port: str) -> str | None:
    """``"icarus"`` / ``"verilator"`` for ``--port sim:icarus`` / ``sim:verilator`` (refused in one line when the
    simulator is missing), None for any other port; an unknown ``sim:NAME`` is refused."""
    if not port.startswith("sim:") or port == "sim:amaranth":
        return None
    if port not in SIM_PORTS:
        raise SparsynError(f"unknown simulated port {port!r}; choose one of: {', '.join(SIM_PORTS)}")
    from sparsyn.sim.tools import check_simulator
    name = port[4:]
    check_simulator(name)
    return name


def open_port(port: str, design: InferenceDesign, log=print):
    """A transport to the board: ``sim`` / ``sim:amaranth`` (the RTL in Amaranth's simulator) or a serial port
    (``sim:icarus`` / ``sim:verilator`` run in a cocotb bench instead: :func:`infer_on_rtl`)."""
    if port in ("sim", "sim:amaranth"):
        from sparsyn.sim.board_sim import AmaranthBoard
        log(f"port sim: the inference top's RTL in Amaranth's simulator at {design.board.clock_hz / 1e6:g} MHz, "
            f"UART {design.baud} baud (divisor {design.divisor}) at bit level")
        return AmaranthBoard(design.core(), divisor=design.divisor, clk_hz=design.board.clock_hz)
    if port.startswith("sim:"):
        raise SparsynError(f"--port {port} runs in a cocotb bench, not through open_port; use run_infer")
    from sparsyn.sw.link_client import SerialTransport
    return SerialTransport(port, design.baud)


def test_images(model, count: int, data=None):
    """``count`` test images (int8 codes) and their labels (None for data without labels) from the test split of
    ``data`` (default: the digits)."""
    from sparsyn.sw.data import digits
    from sparsyn.sw.golden import quantize_input
    data = data or digits()
    if count < 1:
        raise SparsynError(f"--images must be at least 1, not {count}")
    if math.prod(data.input_shape) != math.prod(model.input_shape):
        raise SparsynError(f"the data's samples have shape {tuple(data.input_shape)}, the model takes "
                           f"{tuple(model.input_shape)}; give the data the model was compressed for")
    n = min(count, len(data.test_x))
    x = quantize_input(data.test_x[:n], model.input_scale)
    return x, (np.asarray(data.test_y[:n]) if data.labelled else None)


def infer_data(doc: dict, data=None):
    """The data ``infer`` streams: ``data`` (an ``.npz`` path, ``--data``) or the data the manifest was compressed
    with (its record: the digits, a zoo model's synthetic data, or the recorded ``.npz`` file)."""
    from sparsyn.sw.data import load_data, recorded_data
    if data is not None:
        return load_data(Path(data))
    return recorded_data(doc.get("data"))


def run_infer(manifest, board: str, port: str, *, images: int = 10, baud: int = DEFAULT_BAUD, timeout_s: float = 2.0,
              weights: str = "auto", scratch: str = "auto", acts: str = "auto", data=None, log=print) -> dict:
    """``sparsyn infer``: stream test images (``data``: an ``.npz`` file; default the data the manifest was compressed
    with) through the board, check every logit against the golden model."""
    from sparsyn.sw.manifest import load_manifest
    simulator = rtl_simulator(port)
    design = inference_design(manifest, board, baud=baud, weights=weights, scratch=scratch, acts=acts, log=log)
    model, _, doc = load_manifest(Path(manifest))
    test_images(model, images, infer_data(doc, data))           # refuse bad data before the port is opened
    if simulator is not None:
        return infer_on_rtl(design, simulator, manifest, port, images=images, timeout_s=timeout_s, data=data,
                            log=log)
    return infer_session(open_port(port, design, log), design, manifest, port, images=images, timeout_s=timeout_s,
                         data=data, log=log)


def infer_session(transport, design: InferenceDesign, manifest, port: str, *, images: int = 10,
                  timeout_s: float = 2.0, log=print, data=None) -> dict:
    """The host side of ``sparsyn infer`` on an open ``transport`` (closed at the end): IDENTIFY, the weights when
    they live in SPRAM, then per image (from :func:`infer_data`) WRITE the input, RUN, READ the outputs, each checked
    against the golden model and the cycle model (a mismatch raises). Returns the report (:func:`format_infer`)."""
    from sparsyn.sw.golden import run_golden
    from sparsyn.sw.link_client import LinkClient
    from sparsyn.sw.manifest import load_manifest
    from sparsyn.hw.inference import REGION_INPUT, REGION_OUTPUT
    model, packed, doc = load_manifest(Path(manifest))
    x, labels = test_images(model, images, infer_data(doc, data))
    gold = run_golden(model, x)[-1].numpy().reshape(len(x), -1)
    rows = []
    run_timeout = None
    if port.startswith("sim"):
        # simulated board time: a reply is due within a few frames; a RUN within a few times the cycle model
        timeout_s = min(timeout_s, 20_000 * design.divisor / design.board.clock_hz)
        run_timeout = 4 * design.plan.cycle_model["total"] / design.board.clock_hz + timeout_s
    with LinkClient(transport, timeout_s=timeout_s, run_timeout_s=run_timeout) as client:
        check_identity(client.identify(), design, port, manifest)
        weight_load_s = 0.0
        if design.weights_in in ("spram", "passstore"):
            from sparsyn.hw.inference import REGION_WEIGHTS
            image = design.weight_image
            log(f"loading {len(image)} bytes of weights (the manifest's ROM words) into the board's SPRAM")
            t0 = time.perf_counter()
            client.write(REGION_WEIGHTS, 0, image)
            weight_load_s = time.perf_counter() - t0
        for i in range(len(x)):
            img = x[i].numpy().reshape(-1).astype(np.int64)
            t0 = time.perf_counter()
            client.write(REGION_INPUT, 0, bytes(int(v) & 0xFF for v in img))
            t1 = time.perf_counter()
            cycles = client.run()
            t2 = time.perf_counter()
            raw = client.read(REGION_OUTPUT, 0, gold.shape[1])
            t3 = time.perf_counter()
            got = np.array([b - 256 if b > 127 else b for b in raw], dtype=np.int64)
            bad = np.nonzero(got != gold[i])[0]
            if len(bad):
                j = int(bad[0])
                raise SparsynError(f"image {i}: output {model.layers[-1].name} element {j}: expected {gold[i][j]}, "
                                   f"board gave {got[j]} ({len(bad)} of {len(got)} differ)")
            expect_cycles = int(design.plan.cycles(img))
            if cycles != expect_cycles:
                raise SparsynError(f"image {i}: the board counted {cycles} cycles, the cycle model says {expect_cycles}")
            rows.append({"image": i, "label": int(labels[i]) if labels is not None else None,
                         "predicted": int(np.argmax(got)), "cycles": int(cycles),
                         "write_s": t1 - t0, "run_s": t2 - t1, "read_s": t3 - t2})
    # top-1 of a classifier; data without labels (an autoencoder's) has none: its outputs are checked bit-exact
    acc = float(np.mean([r["label"] == r["predicted"] for r in rows])) if labels is not None else None
    cyc = float(np.mean([r["cycles"] for r in rows]))
    link_bytes = _link_bytes(design)
    report = {"board": design.board.name, "port": port, "engine": design.engine_kind, "baud": design.baud,
              "images": len(rows), "accuracy": acc, "bit_exact": True, "cycles_per_image": cyc,
              "clock_mhz": design.board.clock_hz / 1e6,
              "on_chip_us_per_image": cyc / design.board.clock_hz * 1e6,
              "wall_s_per_image": float(np.mean([r["write_s"] + r["run_s"] + r["read_s"] for r in rows])),
              "link_bytes_per_image": link_bytes,
              "link_us_per_image": link_bytes * 10 / design.baud * 1e6,
              "weights_in": design.weights_in, "weight_bytes_loaded": len(design.weight_image),
              "weight_load_s": weight_load_s, "rows": rows}
    return report


def infer_on_rtl(design: InferenceDesign, simulator: str, manifest, port: str, *, images: int = 10,
                 timeout_s: float = 2.0, data=None, log=print) -> dict:
    """``--port sim:icarus`` / ``sim:verilator``: ``design.core()`` converted to Verilog and compiled (cached under
    work/cache/sim), then :func:`infer_session` — via :func:`rtl_host` — inside the cocotb bench
    :mod:`sparsyn.sim.benches.bench_board_link`, its transport the simulated UART pins. Returns the same report."""
    from sparsyn.sim.runner import BenchFailure, run_bench
    log(f"port {port}: the inference top's RTL as Verilog in {simulator} (cocotb) at "
        f"{design.board.clock_hz / 1e6:g} MHz, UART {design.baud} baud (divisor {design.divisor}) at bit level")
    bld = build_rtl(design, simulator, log=log)
    params = {"host": "sparsyn.boards.infer:rtl_host", "divisor": design.divisor, "clk_hz": design.board.clock_hz,
              "args": {"manifest": str(Path(manifest).resolve()), "board": design.board.name, "baud": design.baud,
                       "weights": design.weights_in, "scratch": design.scratch, "acts": design.acts, "port": port, "images": int(images),
                       "timeout_s": float(timeout_s), "design_hash": design.design_hash.hex(),
                       "data": str(Path(data).resolve()) if data is not None else None}}
    try:
        res = run_bench(bld, "sparsyn.sim.benches.bench_board_link", params, waves_on_failure=False)
    except BenchFailure as err:
        raise SparsynError(err.results.get("error") or str(err)) from None
    return res["result"]


def build_rtl(design: InferenceDesign, simulator: str, log=print):
    """``design.core()`` as Verilog, compiled for ``simulator`` (a :class:`sparsyn.sim.runner.Build`, cached)."""
    from sparsyn.sim.runner import build, to_verilog
    text, _ = to_verilog(design.core(), "inference_top")
    return build(None, simulator, "inference_top", verilog_text=text, log=log)


def rtl_host(transport, args: dict) -> dict:
    """The host side of :func:`infer_on_rtl`, run by the cocotb bench: the same design (rebuilt from the manifest and
    the options) and the same :func:`infer_session` as for a board."""
    design = inference_design(args["manifest"], args["board"], baud=args["baud"], weights=args["weights"],
                              scratch=args.get("scratch", "ebr"), acts=args.get("acts", "ebr"), log=lambda *a: None)
    # the identity the caller expects of the RTL it converted: the sources' hash in it would differ here if a file
    # were edited while the bench starts, which changes nothing in the simulated RTL
    design.design_hash = bytes.fromhex(args["design_hash"])
    return infer_session(transport, design, args["manifest"], args["port"], images=args["images"],
                         timeout_s=args["timeout_s"], data=args.get("data"))


def check_identity(ident, design: InferenceDesign, port: str, manifest) -> None:
    """Refuse (one line: re-flash) a board that answers IDENTIFY with another design than ``design``."""
    if ident.design_hash != design.design_hash or ident.model_hash != design.model_hash:
        raise SparsynError(f"the board on {port} runs another design (hash {ident.design_hash.hex()}, model "
                           f"{ident.model_hash.hex()}; this manifest / board / baud / sparsyn give "
                           f"{design.design_hash.hex()}, model {design.model_hash.hex()}): re-flash it with "
                           f"'sparsyn build --board {design.board.name} --manifest {manifest}' and "
                           f"'sparsyn flash --board {design.board.name}'")


def _link_bytes(design: InferenceDesign) -> int:
    """UART bytes per image both ways: WRITE of the input, RUN, READ of the outputs, with their replies."""
    n_in = design.identity.regions[0].size
    n_out = design.identity.regions[1].size
    frames = -(-n_in // (MAX_PAYLOAD - 5))
    frame = 6          # sync, cmd, length (2), crc (2)
    write = n_in + frames * (frame + 5) + frames * frame
    run = frame + frame + 4
    read = frame + 7 + frame + n_out
    return write + run + read


def format_infer(report: dict) -> str:
    return "\n".join([
        f"{report['images']} images on {report['board']} via {report['port']} ({report['engine']} engine, "
        f"{report['baud']} baud): every output bit-exact vs the golden model",
        (f"  accuracy          {report['accuracy'] * 100:.1f} %" if report["accuracy"] is not None else
         "  accuracy          - (data without labels)"),
        f"  on-chip cycles    {report['cycles_per_image']:.0f} per image = {report['on_chip_us_per_image']:.1f} us "
        f"at {report['clock_mhz']:g} MHz",
        f"  link              {report['link_bytes_per_image']} bytes per image = {report['link_us_per_image']:.0f} us "
        f"at {report['baud']} baud",
        f"  wall time         {report['wall_s_per_image'] * 1e3:.1f} ms per image (host side"
        f"{', simulated board' if str(report['port']).startswith('sim') else ''})",
    ])
