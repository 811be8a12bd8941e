"""The shared array's ROM format: a layer's memory images exactly as the LayerEngine holds them.

Every scheme that runs on the shared weight-stationary array (``dense``, ``packcnn``, ``tight``,
``ternary``) hands its schedule (a :class:`~.schedule.TileProgram`: which inputs feed which array row
in which pass, and the PE entries) to :func:`pack_array`, which lays it out as the memories of the
engine — nothing more, nothing less. The ROM files of the manifest are these images word for word;
the generated design initialises its memories from them, and :func:`decode_array` rebuilds the
golden model's integer weights and constants from the same words (through the scheme's
``entry_coefficients``, the software model of its PE).

Memories (R x C array, L lanes per PE, P = passes, S = sections of C output channels):

=========== ========== ======================== ============================================
ROM         kind       word                     depth
=========== ========== ======================== ============================================
weights     weights    C PE entries (entry_w)   P * R   (pass-major; row r of pass p at p*R + r)
lanes       index      L lane descriptors       P * R   ({valid, channel, dy, dx} per lane)
passes      table      {section, first, last,   P + 1   (read one pass ahead: the last word is
                       channels}                         repeated once)
bias        constants  C x int32                S
requant     constants  {mult: 15, shift: 6}     S * C   (channels past N: mult 0, shift 1)
=========== ========== ======================== ============================================

**Row feeds** (``meta["feed"]``): how an array row's L lanes find their inputs, i.e. what a ``lanes``
word holds:

* ``lanes`` (default) — L lane descriptors ``{valid, channel, dy, dx}``: any L inputs of the receptive
  field (the im2col activation buffer reads each lane separately);
* ``window`` — one row descriptor ``{valid, channel}``: the L = kh*kw lanes are that channel's kernel
  window at the current output pixel, lane ``dy*kw + dx`` (the window feeder shifts it along the row);
* ``channels`` — one row descriptor ``{valid, group}`` (1x1 kernels): lane ``l`` is input channel
  ``group*L + l`` at the output pixel (invalid past the last channel).

**Implicit rows** (``meta["implicit_rows"]``, ``window`` / ``channels`` feeds only): when no section skips a
slot, row t of a section (its pass ``t // R``, row ``t % R``) always reads channel / group t (t < J, the
channels or groups of the layer; later rows are zero slots), so the ``lanes`` ROM is not stored at all:
the control counts the rows instead. :func:`pack_array` chooses it by itself whenever it applies.

**Split entries** (``meta["index_bits"]`` = b > 0): the low b bits of every PE entry are index (e.g. a
pattern id) and live in their own ROM ``ids`` (kind index, C x b bits per word, same addresses as
``weights``); ``weights`` then holds only the upper ``entry_w - b`` bits of each entry. The control
reads both and hands the PE the whole entry.

**Scheme tables** (``meta["tables"]``: name -> kind): further ROMs a scheme's PE reads (e.g. a pattern
table); the scheme packs and checks them, this module only requires that they are present.

Every memory has at least 2 words (a 1-word memory would have a zero-width address port); the pad
words are zero and are counted like any other stored bit. Word layouts are the
``amaranth.lib.data`` layouts below (plain data, shared with :mod:`sparsyn.hw.layouts`), so a ROM
word, a memory word and a register in the engine carry the same named fields.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from .errors import SparsynError
from .qmodel import QuantLayer
from .requant import MAX_SHIFT, MULT_BITS
from .schedule import ArrayConfig, TileProgram

#: Accumulator / bias width (the numeric contract's 32-bit accumulator).
ACC_BITS = 32
SHIFT_BITS = 6
#: The kinds a ROM file can be, as the manifest lists them.
ROM_KINDS = ("weights", "index", "table", "constants")
#: A memory is never shallower than this (no zero-width address ports).
MIN_DEPTH = 2


def bits_for_range(n: int) -> int:
    """Unsigned width that holds ``0 .. n-1`` (at least 1 bit, so no zero-width fields reach Verilog)."""
    return max(1, (max(n, 1) - 1).bit_length())


def lane_descriptor(channels: int, kh: int, kw: int) -> data.StructLayout:
    """Where one lane's activation comes from: input channel and kernel offset (valid=0: constant 0)."""
    return data.StructLayout({
        "valid": unsigned(1),
        "channel": unsigned(bits_for_range(channels)),
        "dy": unsigned(bits_for_range(kh)),
        "dx": unsigned(bits_for_range(kw)),
    })


def row_lanes(descriptor: data.StructLayout, lanes: int) -> data.ArrayLayout:
    """The L lane descriptors of one array row (one lane-memory word)."""
    return data.ArrayLayout(descriptor, lanes)


def weight_word(entry_layout, cols: int) -> data.ArrayLayout:
    """One weight-memory word: the C PE entries of one array row for one pass."""
    return data.ArrayLayout(entry_layout, cols)


def acc_vector(cols: int) -> data.ArrayLayout:
    """One accumulator (or bias) word: C signed 32-bit values, one per array column."""
    return data.ArrayLayout(signed(ACC_BITS), cols)


def pass_info(sections: int, cols: int) -> data.StructLayout:
    """One pass-table word: the pass's section, whether it is the section's first / last pass, and
    how many real output channels (<= C) the section has."""
    return data.StructLayout({
        "section": unsigned(bits_for_range(sections)),
        "first": unsigned(1),
        "last": unsigned(1),
        "channels": unsigned(bits_for_range(cols + 1)),
    })


#: Per-output-channel requantization constants (one requant-ROM word).
RequantConst = data.StructLayout({"mult": unsigned(MULT_BITS), "shift": unsigned(SHIFT_BITS)})


def word(layout, init) -> int:
    """The integer ROM word of ``init`` (a mapping / sequence of field values) in ``layout``."""
    return layout.const(init).as_value().value


def _padded(words: list[int]) -> list[int]:
    return list(words) + [0] * (MIN_DEPTH - len(words))


#: The row feeds (see the module docstring).
FEEDS = ("lanes", "window", "channels")


def window_descriptor(channels: int) -> data.StructLayout:
    """``window`` feed: the input channel whose kernel window a row reads (valid=0: constant 0)."""
    return data.StructLayout({"valid": unsigned(1), "channel": unsigned(bits_for_range(channels))})


def group_descriptor(channels: int, lanes: int) -> data.StructLayout:
    """``channels`` feed: the group of L consecutive input channels a row reads (valid=0: constant 0)."""
    return data.StructLayout({"valid": unsigned(1), "group": unsigned(bits_for_range(-(-channels // lanes)))})


def row_descriptor(meta: dict):
    """The layout of one ``lanes``-ROM word of a packed layer, by its feed."""
    a, feed = meta["array"], meta.get("feed", "lanes")
    if feed == "window":
        return window_descriptor(meta["in_channels"])
    if feed == "channels":
        return group_descriptor(meta["in_channels"], a["lanes"])
    return row_lanes(lane_descriptor(meta["in_channels"], *meta["kernel"]), a["lanes"])


def _layouts(meta: dict, entry_layout):
    a = meta["array"]
    ib = meta.get("index_bits", 0)
    out = {"weights": (weight_word(entry_layout, a["cols"]) if not ib
                       else data.ArrayLayout(unsigned(entry_layout.size - ib), a["cols"])),
           "lanes": row_descriptor(meta),
           "passes": pass_info(meta["sections"], a["cols"]),
           "bias": acc_vector(a["cols"]),
           "requant": RequantConst}
    if ib:
        out["ids"] = data.ArrayLayout(unsigned(ib), a["cols"])
    return out


#: name -> kind of every ROM of the array format.
ARRAY_ROMS = {"weights": "weights", "lanes": "index", "passes": "table", "bias": "constants",
              "requant": "constants"}
#: The ROM of the split-off index bits of the PE entries (``meta["index_bits"]`` > 0).
IDS_ROM = ("ids", "index")


def rom_kinds(meta: dict) -> dict:
    """name -> kind of every ROM a packed layer of the array format has (incl. ``ids`` and scheme tables)."""
    out = dict(ARRAY_ROMS)
    if meta.get("implicit_rows"):
        del out["lanes"]
    if meta.get("index_bits", 0):
        out[IDS_ROM[0]] = IDS_ROM[1]
    out.update(meta.get("tables", {}))
    return out


def slot_descriptor(meta: dict, lane_k) -> dict | None:
    """The row descriptor fields of a slot for the ``window``/``channels`` feeds (None: a zero slot);
    refuses lanes that are not a whole window / channel group."""
    feed, lanes = meta["feed"], meta["array"]["lanes"]
    lane_k = [int(k) for k in lane_k]
    if all(k < 0 for k in lane_k):
        return None
    if feed == "window":
        c = lane_k[0] // lanes
        want = [c * lanes + i for i in range(lanes)]
        if lane_k != want:
            raise SparsynError(f"a slot of a 'window' feed must read one channel's whole kernel window, got inputs "
                               f"{lane_k}; fix the scheme's schedule")
        return {"valid": 1, "channel": c}
    g = lane_k[0] // lanes
    want = [g * lanes + i if g * lanes + i < meta["k"] else -1 for i in range(lanes)]
    if lane_k != want:
        raise SparsynError(f"a slot of a 'channels' feed must read L consecutive input channels, got inputs "
                           f"{lane_k}; fix the scheme's schedule")
    return {"valid": 1, "group": g}


def row_groups(meta: dict) -> int:
    """J: the channels (``window`` feed) or channel groups (``channels`` feed) a row can read."""
    lanes = meta["array"]["lanes"]
    return meta["in_channels"] if meta["feed"] == "window" else -(-meta["in_channels"] // lanes)


def implicit_descriptor(meta: dict, row: int) -> dict:
    """The row descriptor fields of program row ``row`` (pass-major) of an ``implicit_rows`` layer."""
    r = meta["array"]["rows"]
    j = row_groups(meta)
    t = row % (-(-j // r) * r)                  # the row's place within its section
    key = "channel" if meta["feed"] == "window" else "group"
    return {"valid": int(t < j), key: t if t < j else 0}


def _implicit_rows(meta: dict, program: TileProgram) -> bool:
    """Whether every section reads channel / group 0, 1, .., J-1 in order, none skipped."""
    if meta["feed"] == "lanes":
        return False
    j = row_groups(meta)
    for slots in program.sections:
        if len(slots) != j:
            return False
        for t, slot in enumerate(slots):
            d = slot_descriptor(meta, slot.lane_k)
            if d is None or d.get("channel", d.get("group")) != t:
                return False
    return True


def descriptor_inputs(meta: dict, desc) -> list[int]:
    """The K index of each lane (-1: constant 0) that a decoded ``lanes``-ROM word describes."""
    feed, lanes = meta.get("feed", "lanes"), meta["array"]["lanes"]
    cin, (kh, kw) = meta["in_channels"], meta["kernel"]
    if feed == "window":
        if not int(desc.valid):
            return [-1] * lanes
        c = int(desc.channel)
        if c >= cin:
            raise SparsynError(f"a window descriptor points at channel {c} of {cin}; the ROM is corrupt, "
                               "re-run 'sparsyn compress'")
        return [c * lanes + i for i in range(lanes)]
    if feed == "channels":
        if not int(desc.valid):
            return [-1] * lanes
        g = int(desc.group)
        if g * lanes >= cin:
            raise SparsynError(f"a channel-group descriptor points at group {g} past channel {cin}; the ROM is "
                               "corrupt, re-run 'sparsyn compress'")
        return [g * lanes + i if g * lanes + i < cin else -1 for i in range(lanes)]
    out = []
    for d in desc:
        if not int(d.valid):
            out.append(-1)
            continue
        ch, dy, dx = int(d.channel), int(d.dy), int(d.dx)
        if ch >= cin or dy >= kh or dx >= kw:
            raise SparsynError(f"a lane descriptor points outside the layer (channel {ch}, offset {dy},{dx}); "
                               "the ROM is corrupt, re-run 'sparsyn compress'")
        out.append((ch * kh + dy) * kw + dx)
    return out


def array_layouts(meta: dict, entry_layout) -> dict:
    """The ``amaranth.lib.data`` layout of every ROM word of a packed layer (name -> layout)."""
    return _layouts(meta, entry_layout)


def _pass_list(program: TileProgram) -> list[dict]:
    passes = program.passes
    out = []
    for i, (section, _) in enumerate(passes):
        first = i == 0 or passes[i - 1][0] != section
        last = i == len(passes) - 1 or passes[i + 1][0] != section
        out.append({"section": section, "first": int(first), "last": int(last),
                    "channels": min(program.array.cols, program.n - section * program.array.cols)})
    return out


def check_constants(layer: QuantLayer) -> None:
    """Refuse (one line) requantization constants or a bias outside what the constants ROMs hold."""
    mult, shift, bias = (np.asarray(v, dtype=np.int64) for v in (layer.mult, layer.shift, layer.bias))
    if np.any(mult < 0) or np.any(mult >= 1 << MULT_BITS) or np.any(shift < 1) or np.any(shift > MAX_SHIFT):
        raise SparsynError(f"layer {layer.name}: requant mult/shift outside the hardware range "
                           f"(mult < 2**{MULT_BITS}, 1 <= shift <= {MAX_SHIFT}); re-run 'sparsyn compress'")
    if np.any(bias < -(1 << (ACC_BITS - 1))) or np.any(bias >= 1 << (ACC_BITS - 1)):
        raise SparsynError(f"layer {layer.name}: a bias does not fit the {ACC_BITS}-bit accumulator; "
                           "reduce the bias or re-run 'sparsyn compress'")


def pack_array(scheme: str, layer: QuantLayer, program: TileProgram, entry_layout, meta: dict):
    """A scheme's schedule -> :class:`~.schemes.base.PackedLayer` whose ROMs are the engine's memories.

    ``meta`` is the scheme's own metadata (whatever its ``entry_layout`` / ``entry_coefficients``
    read); the array format adds ``array``, ``n``, ``k``, ``in_channels``, ``kernel``, ``entry_width``,
    ``sections`` and ``passes``.
    """
    from .schemes.base import PackedLayer, Rom
    arr = program.array
    r, c, lanes = arr.rows, arr.cols, arr.lanes
    if entry_layout.size != program.entry_width:
        raise SparsynError(f"scheme {scheme}: entry layout is {entry_layout.size} bits but the program's entries "
                           f"are {program.entry_width} bits; fix the scheme's entry_layout")
    kh, kw = layer.kernel
    cin = layer.in_shape[0]
    if (program.n, program.k) != (layer.n, layer.k):
        raise SparsynError(f"scheme {scheme}: program of layer {layer.name} is {program.n}x{program.k}, "
                           f"the layer is {layer.n}x{layer.k}")
    check_constants(layer)   # the ROM fields would silently truncate anything outside their range
    meta = {**meta, "array": {"rows": r, "cols": c, "lanes": lanes}, "n": layer.n, "k": layer.k,
            "in_channels": cin, "kernel": [kh, kw], "entry_width": program.entry_width,
            "sections": len(program.sections), "passes": len(program.passes)}
    feed = meta.setdefault("feed", "lanes")
    if feed not in FEEDS:
        raise SparsynError(f"scheme {scheme}: unknown row feed {feed!r}; one of {', '.join(FEEDS)}")
    if feed == "window" and lanes != kh * kw:
        raise SparsynError(f"scheme {scheme}: a 'window' feed needs L = kh*kw = {kh * kw} lanes, got {lanes}")
    if feed == "channels" and (kh, kw) != (1, 1):
        raise SparsynError(f"scheme {scheme}: a 'channels' feed needs a 1x1 kernel, layer {layer.name} has {kh}x{kw}")
    meta["implicit_rows"] = _implicit_rows(meta, program)
    ib = int(meta.get("index_bits", 0))
    if not 0 <= ib < program.entry_width:
        raise SparsynError(f"scheme {scheme}: index_bits={ib} must be below the {program.entry_width}-bit entry")
    lay = _layouts(meta, entry_layout)
    ew = program.entry_width
    emask = (1 << ew) - 1
    lane_cache: dict[tuple, int] = {}
    if feed == "lanes":
        desc = lay["lanes"].elem_shape
        dwidth = desc.size
        off = {name: desc[name].offset for name in ("valid", "channel", "dy", "dx")}
        kernel_area = kh * kw

        def desc_word(k: int) -> int:
            # the same bits as word(desc, {...}), computed directly: a layer has one descriptor per k
            if k < 0:
                return 0
            ch, rest = divmod(k, kernel_area)
            dy, dx = divmod(rest, kw)
            return (1 << off["valid"]) | (ch << off["channel"]) | (dy << off["dy"]) | (dx << off["dx"])

        def row_word(key) -> int:
            return sum(desc_word(int(k)) << (lane * dwidth) for lane, k in enumerate(key))
    else:
        def row_word(key) -> int:
            fields = slot_descriptor(meta, key)
            return 0 if fields is None else word(lay["lanes"], fields)

    weights, lane_words, id_words = [], [], []
    wmask, iw = (1 << (ew - ib)) - 1, ew - ib
    for _, slots in program.passes:
        for slot in slots:
            bits = ids = 0
            for col, entry in enumerate(slot.entries):
                e = int(entry) & emask
                if ib:
                    ids |= (e & ((1 << ib) - 1)) << (col * ib)
                    bits |= ((e >> ib) & wmask) << (col * iw)
                else:
                    bits |= e << (col * ew)
            weights.append(bits)
            id_words.append(ids)
            key = slot.lane_k
            if key not in lane_cache:
                lane_cache[key] = row_word(key)
            lane_words.append(lane_cache[key])
    table = [word(lay["passes"], p) for p in _pass_list(program)]
    table.append(table[-1])
    sections = len(program.sections)
    bias = np.zeros(sections * c, np.int64)
    bias[:layer.n] = layer.bias
    bias_words = [word(lay["bias"], [int(v) for v in bias[s * c:(s + 1) * c]]) for s in range(sections)]
    rq_words = [word(RequantConst, {"mult": int(layer.mult[i]) if i < layer.n else 0,
                                    "shift": int(layer.shift[i]) if i < layer.n else 1})
                for i in range(sections * c)]
    images = {"weights": weights, "lanes": lane_words, "passes": table, "bias": bias_words, "requant": rq_words}
    if meta["implicit_rows"]:
        del images["lanes"]          # the control counts the rows (see the module docstring)
    if ib:
        images[IDS_ROM[0]] = id_words
    kinds = rom_kinds(meta)
    roms = {name: Rom(lay[name].size, _padded(words), kinds[name]) for name, words in images.items()}
    return PackedLayer(scheme, meta, roms)


def entry_words(packed, rows: int) -> list[int]:
    """The first ``rows`` rows' PE entries (C per row, column-major within a row), reassembled from the
    ``weights`` ROM and, for split entries, the ``ids`` ROM."""
    m = packed.meta
    c, ew = m["array"]["cols"], m["entry_width"]
    ib = m.get("index_bits", 0)
    wrom = packed.roms["weights"].words[:rows]
    if not ib:
        mask = (1 << ew) - 1
        return [(int(w) >> (col * ew)) & mask for w in wrom for col in range(c)]
    iw = ew - ib
    irom = packed.roms[IDS_ROM[0]].words[:rows]
    wmask, imask = (1 << iw) - 1, (1 << ib) - 1
    return [((((int(w) >> (col * iw)) & wmask) << ib) | ((int(i) >> (col * ib)) & imask))
            for w, i in zip(wrom, irom) for col in range(c)]


def _fields(layout, words) -> list:
    return [layout.from_bits(int(w)) for w in words]


def check_array_roms(packed, entry_layout) -> dict:
    """Check that every ROM of the array format is there with the kind, width and depth the engine
    expects; returns the layouts. Raises a one-line SparsynError naming the ROM otherwise."""
    m = packed.meta
    try:
        lay = _layouts(m, entry_layout)
        r, c = m["array"]["rows"], m["array"]["cols"]
        depths = {"weights": m["passes"] * r, "lanes": m["passes"] * r, "passes": m["passes"] + 1,
                  "bias": m["sections"], "requant": m["sections"] * c, IDS_ROM[0]: m["passes"] * r}
        kinds = rom_kinds(m)
    except (KeyError, TypeError) as err:
        raise SparsynError(f"packed layer ({packed.scheme}) lacks array-format field {err}; "
                           "re-run 'sparsyn compress'") from None
    if m["entry_width"] != entry_layout.size:
        raise SparsynError(f"packed layer ({packed.scheme}) says {m['entry_width']}-bit PE entries but the "
                           f"scheme's PE takes {entry_layout.size} bits; re-run 'sparsyn compress'")
    for name, kind in kinds.items():
        rom = packed.roms.get(name)
        if rom is None:
            raise SparsynError(f"packed layer ({packed.scheme}) has no '{name}' ROM ({kind}); "
                               "re-run 'sparsyn compress'")
        if name not in lay:       # a scheme table: the scheme checks its width and depth
            if rom.kind != kind:
                raise SparsynError(f"ROM '{name}' is {rom.kind}, the scheme expects {kind}; re-run 'sparsyn compress'")
            continue
        want = max(MIN_DEPTH, depths[name])
        if rom.kind != kind or rom.width != lay[name].size or rom.depth != want:
            raise SparsynError(f"ROM '{name}' is {rom.kind}, {rom.width} bits x {rom.depth} words but the engine "
                               f"expects {kind}, {lay[name].size} bits x {want} words; the ROM does not belong "
                               "to this layer, re-run 'sparsyn compress'")
    extra = sorted(set(packed.roms) - set(kinds))
    if extra:
        raise SparsynError(f"packed layer ({packed.scheme}) has ROM(s) {extra} that its engine does not load; "
                           "re-run 'sparsyn compress'")
    return lay


def pass_table(packed, entry_layout) -> list[dict]:
    """The pass-table ROM decoded: one ``{section, first, last, channels}`` per pass (the spare word
    dropped). Checks that it describes consecutive sections with their real channel counts."""
    m = packed.meta
    lay = check_array_roms(packed, entry_layout)
    c, n = m["array"]["cols"], m["n"]
    out = []
    for i, v in enumerate(_fields(lay["passes"], packed.roms["passes"].words[:m["passes"]])):
        out.append({"section": int(v.section), "first": int(v.first), "last": int(v.last),
                    "channels": int(v.channels)})
    expect = None
    for i, p in enumerate(out):
        prev = out[i - 1] if i else None
        first = prev is None or prev["section"] != p["section"]
        want_section = 0 if prev is None else prev["section"] + (1 if first else 0)
        nxt = out[i + 1] if i + 1 < len(out) else None
        last = nxt is None or nxt["section"] != p["section"]
        expect = min(c, n - p["section"] * c)
        if (p["section"], p["first"], p["last"], p["channels"]) != (want_section, int(first), int(last), expect):
            raise SparsynError(f"pass table word {i} ({p}) is inconsistent (sections must follow each other with "
                               "first/last flags and their channel count); the ROM is corrupt, re-run 'sparsyn compress'")
    if not out or out[-1]["section"] != m["sections"] - 1:
        raise SparsynError("pass table does not cover every section; the ROM is corrupt, re-run 'sparsyn compress'")
    return out


def decode_array(packed, entry_layout, coefficients) -> np.ndarray:
    """ROM images -> the exact N x K integer weights the engine computes.

    ``coefficients(words) -> (len(words), L)`` int array is the scheme's PE model (the integer weight
    each lane of an entry applies). A nonzero coefficient on a lane whose descriptor is not valid, or
    a descriptor outside the layer, means a corrupt ROM and is refused.
    """
    m = packed.meta
    lay = check_array_roms(packed, entry_layout)
    passes = pass_table(packed, entry_layout)
    r, c, lanes = m["array"]["rows"], m["array"]["cols"], m["array"]["lanes"]
    n, k = m["n"], m["k"]
    rows = len(passes) * r
    entries = entry_words(packed, rows)
    coeff = np.asarray(coefficients(entries), dtype=np.int64).reshape(rows, c, lanes)
    lane_k = np.full((rows, lanes), -1, dtype=np.int64)
    for i, word_ in enumerate(row_words(packed, lay, rows)):
        try:
            lane_k[i] = descriptor_inputs(m, lay["lanes"].from_bits(int(word_)))
        except SparsynError as err:
            raise SparsynError(f"lane ROM word {i}: {err}") from None
    section_of_row = np.repeat([p["section"] for p in passes], r)
    w = np.zeros((m["sections"] * c, k), dtype=np.int64)
    for row in range(rows):
        for lane in range(lanes):
            col_coeff = coeff[row, :, lane]
            if not col_coeff.any():
                continue
            kk = lane_k[row, lane]
            if kk < 0:
                raise SparsynError(f"weight ROM word {row} has a nonzero weight on lane {lane}, which reads no input; "
                                   "the ROM is corrupt, re-run 'sparsyn compress'")
            w[section_of_row[row] * c:(section_of_row[row] + 1) * c, kk] += col_coeff
    if np.any(w[n:]):
        raise SparsynError("weight ROM holds nonzero weights for output channels past the layer's last; "
                           "the ROM is corrupt, re-run 'sparsyn compress'")
    return w[:n]


def decode_constants(packed, entry_layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bias and requantization ROMs -> (bias, mult, shift) per output channel (int64 arrays of N)."""
    m = packed.meta
    lay = check_array_roms(packed, entry_layout)
    n, c = m["n"], m["array"]["cols"]
    bias = []
    for word in packed.roms["bias"].words[:m["sections"]]:
        bias.extend(int(v) for v in lay["bias"].from_bits(int(word)))
    rq = _fields(RequantConst, packed.roms["requant"].words[:m["sections"] * c])
    mult = np.array([int(v.mult) for v in rq], dtype=np.int64)
    shift = np.array([int(v.shift) for v in rq], dtype=np.int64)
    if np.any(shift[:n] < 1) or np.any(shift[:n] > MAX_SHIFT):
        raise SparsynError(f"requant ROM holds a shift outside 1..{MAX_SHIFT}; the ROM is corrupt, "
                           "re-run 'sparsyn compress'")
    return np.array(bias[:n], dtype=np.int64), mult[:n], shift[:n]


def row_words(packed, layouts: dict, rows: int) -> list[int]:
    """The first ``rows`` row-descriptor words: the ``lanes`` ROM's, or the counted ones of implicit rows."""
    m = packed.meta
    if m.get("implicit_rows"):
        return [word(layouts["lanes"], implicit_descriptor(m, i)) for i in range(rows)]
    return [int(w) for w in packed.roms["lanes"].words[:rows]]


def rows_used(packed) -> int:
    """Array-row loads that carry at least one valid lane (the slots actually scheduled)."""
    m = packed.meta
    from .schemes import get_scheme
    lay = _layouts(m, get_scheme(packed.scheme).entry_layout(packed))
    used = 0
    for word_ in row_words(packed, lay, m["passes"] * m["array"]["rows"]):
        used += any(k >= 0 for k in descriptor_inputs(m, lay["lanes"].from_bits(int(word_))))
    return used


def check_array(packed, array: ArrayConfig) -> None:
    """Refuse a packed layer that was laid out for another array geometry than ``array`` (a layer whose
    engine has no shared array, i.e. no ``array`` in its meta, is not compared)."""
    a = packed.meta.get("array")
    if a is None:
        return          # a scheme with its own engine and no shared array: nothing to compare
    if (a["rows"], a["cols"]) != (array.rows, array.cols):
        have = f"{a['rows']}x{a['cols']}"
        raise SparsynError(f"the layer was packed for {have}, not {array.rows}x{array.cols}; re-run "
                           f"'sparsyn compress --array {array.rows}x{array.cols}' (the array is part of the "
                           "compressed artefact)")
