"""Column-combined packed matrices: the representation shared by ``packcnn`` and ``tight``.

Terms (see ``../shared/papers.md`` section 1):

* The N x K integer weight matrix is split into **row sections** of ``height`` rows (the array's
  column count C: one section = one set of output channels computed together). The last section is
  padded with zero rows.
* Matrix columns are **virtual columns**: without subwords virtual column ``v`` is weight column
  ``k = v``; with subwords ``v = 2k + f`` holds the low (``f = 0``) or high (``f = 1``) 4-bit
  subword of column ``k`` (see :mod:`.subword`), so one weight column can sit in two groups.
* A **group** is a tuple of at most ``alpha`` distinct virtual columns; its lane ``l`` carries the
  activation of weight column ``k(v_l)``. A :class:`Grouping` gives each section its own list of
  groups (``tight``), or one list used by every section (``packcnn``, ``shared=True``).
* In each (row, group) at most one member may be nonzero. **Conflict pruning** keeps the member of
  largest magnitude (a high subword counts 16x its digit) and zeroes the others; nonzeros whose
  virtual column is in no group of their section are pruned as well.
* The packed **entry** of (row, group) is the surviving weight (or subword + shift flag) and the
  ``sel`` index of its lane, an ``amaranth.lib.data.StructLayout`` (:func:`entry_layout`); an empty
  cell is the all-zero word.

The **grouped form** (:func:`pack_matrix`): ``entries`` (``sum_s widths[s] * height`` words, order
section, group, row) and ``lanes`` (``alpha`` words per group: ``k + 1``, 0 = unused lane; one table
per section, or one table in all when ``shared``); :func:`decode_packed` rebuilds the exact integer
matrix. It is an intermediate (benchmarks measure rates on it): :func:`tile_program` turns it into the
array schedule, and the manifest holds that schedule's memory images (:mod:`.array_format`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from .errors import SparsynError
from .schedule import ArrayConfig, Slot, TileProgram
from .subword import SUB_BITS, join_subwords, split_subwords


# ---------------------------------------------------------------------------------------------
# virtual columns
# ---------------------------------------------------------------------------------------------
def virtual_matrix(w, subword: bool) -> np.ndarray:
    """Integer N x K -> N x Kv virtual matrix (Kv = K, or 2K interleaved lo/hi subwords)."""
    w = np.asarray(w, dtype=np.int64)
    if not subword:
        return w.copy()
    lo, hi = split_subwords(w)
    v = np.empty((w.shape[0], 2 * w.shape[1]), dtype=np.int64)
    v[:, 0::2], v[:, 1::2] = lo, hi
    return v


def weight_matrix(v, subword: bool) -> np.ndarray:
    """Inverse of :func:`virtual_matrix`."""
    v = np.asarray(v, dtype=np.int64)
    return v.copy() if not subword else join_subwords(v[:, 0::2], v[:, 1::2])


def virtual_magnitude(v, subword: bool) -> np.ndarray:
    """|value| of each virtual entry in weight LSBs (a high subword counts 16x)."""
    m = np.abs(np.asarray(v, dtype=np.float64))
    if subword:
        m[:, 1::2] *= 16.0
    return m


def column_of(vcol: int, subword: bool) -> int:
    return vcol >> 1 if subword else vcol


# ---------------------------------------------------------------------------------------------
# groupings
# ---------------------------------------------------------------------------------------------
@dataclass
class Grouping:
    """Column-to-group assignment of every row section (see module docstring)."""
    height: int
    alpha: int
    subword: bool
    sections: list[list[tuple[int, ...]]]
    shared: bool = False

    def per_section(self, n: int) -> "Grouping":
        """The same grouping with one explicit group list per section of an n-row matrix."""
        if not self.shared:
            return self
        return Grouping(self.height, self.alpha, self.subword, [self.sections[0]] * section_count(n, self.height))

    @property
    def widths(self) -> list[int]:
        return [len(g) for g in self.sections]

    def validate(self, n: int, kv: int) -> None:
        """Structural checks: section count, group sizes, column ranges, no column twice per section."""
        if len(self.sections) != section_count(n, self.height):
            raise ValueError(f"grouping has {len(self.sections)} sections, matrix needs {section_count(n, self.height)}")
        for s, groups in enumerate(self.sections):
            seen = set()
            for g in groups:
                if not 1 <= len(g) <= self.alpha:
                    raise ValueError(f"section {s}: group {g} has {len(g)} columns, alpha is {self.alpha}")
                for v in g:
                    if not 0 <= v < kv or v in seen:
                        raise ValueError(f"section {s}: column {v} out of range or in two groups")
                    seen.add(v)


def section_count(n: int, height: int) -> int:
    return -(-n // height)


def section_rows(n: int, height: int, s: int) -> slice:
    return slice(s * height, min(n, (s + 1) * height))


def _group_index(groups, kv: int) -> np.ndarray:
    gi = np.full(kv, -1, dtype=np.int64)
    for g, members in enumerate(groups):
        gi[list(members)] = g
    return gi


def conflict_prune(v, grouping: Grouping, magnitude=None) -> tuple[np.ndarray, dict]:
    """Zero every virtual entry the grouping cannot hold (row conflicts, columns in no group).

    Returns the pruned N x Kv matrix and ``{"pruned": count, "pruned_magnitude": sum |.|}``.
    Ties keep the lower virtual column (deterministic).
    """
    v = np.asarray(v)
    mag = np.abs(v).astype(np.float64) if magnitude is None else np.asarray(magnitude, dtype=np.float64)
    out = v.copy()
    n, kv = v.shape
    grouping = grouping.per_section(n)
    pruned, pruned_mag = 0, 0.0
    for s, groups in enumerate(grouping.sections):
        rs = section_rows(n, grouping.height, s)
        gi = _group_index(groups, kv)
        r, c = np.nonzero(v[rs])
        if not len(r):
            continue
        g = gi[c]
        m = mag[rs][r, c]
        keep = g >= 0
        # among entries with a group: first of each (row, group) in order (-magnitude, column) survives
        idx = np.nonzero(keep)[0]
        order = idx[np.lexsort((c[idx], -m[idx], g[idx], r[idx]))]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (r[order][1:] != r[order][:-1]) | (g[order][1:] != g[order][:-1])
        survive = np.zeros(len(r), dtype=bool)
        survive[order[first]] = True
        gone = ~survive
        out[rs][r[gone], c[gone]] = 0          # rs is a slice: out[rs] is a view
        pruned += int(gone.sum())
        pruned_mag += float(m[gone].sum())
    return out, {"pruned": pruned, "pruned_magnitude": pruned_mag}


def is_lossless(v, grouping: Grouping) -> bool:
    """True when the grouping holds every nonzero of ``v`` without conflict."""
    return conflict_prune(v, grouping)[1]["pruned"] == 0


def first_fit(support: np.ndarray, alpha: int, magnitude=None, groups=None) -> list[tuple[int, ...]]:
    """Conflict-free first-fit-decreasing: columns by nonzero count (then magnitude) into groups.

    ``support`` is a rows x Kv bool matrix; zero columns are skipped. Existing ``groups`` (with their
    supports) are filled first; new groups are opened as needed. Always lossless.
    """
    support = np.asarray(support, dtype=bool)
    h, kv = support.shape
    mag = support.astype(np.float64) if magnitude is None else np.asarray(magnitude, dtype=np.float64)
    groups = [list(g) for g in (groups or [])]
    placed = {v for g in groups for v in g}
    occ = [support[:, g].any(axis=1) if g else np.zeros(h, dtype=bool) for g in groups]
    cols = [c for c in np.nonzero(support.any(axis=0))[0] if c not in placed]
    nnz = support.sum(axis=0)
    tot = mag.sum(axis=0)
    cols.sort(key=lambda c: (-nnz[c], -tot[c], c))
    occ_m = np.array(occ, dtype=bool).reshape(len(occ), h)
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    for c in cols:
        sup = support[:, c]
        ok = (sizes < alpha) & ~(occ_m & sup).any(axis=1) if len(groups) else np.zeros(0, dtype=bool)
        hit = np.nonzero(ok)[0]
        if len(hit):
            g = int(hit[0])
            groups[g].append(int(c))
            occ_m[g] |= sup
            sizes[g] += 1
        else:
            groups.append([int(c)])
            occ_m = np.vstack([occ_m, sup[None]])
            sizes = np.append(sizes, 1)
    return [tuple(g) for g in groups]


def repair(v, grouping: Grouping, magnitude=None) -> Grouping:
    """A lossless grouping close to ``grouping``: conflicting members of smallest magnitude and
    uncovered columns are evicted and re-placed first-fit (new groups where needed)."""
    v = np.asarray(v)
    n, kv = v.shape
    mag = np.abs(v).astype(np.float64) if magnitude is None else np.asarray(magnitude, dtype=np.float64)
    sections = grouping.per_section(n).sections
    out = []
    for s, groups in enumerate(sections):
        rs = section_rows(n, grouping.height, s)
        sup = v[rs] != 0
        m = mag[rs]
        kept = []
        for g in groups:
            members = [c for c in g if sup[:, c].any()]
            while members:
                cnt = sup[:, members].sum(axis=1)
                if cnt.max() <= 1:
                    break
                bad = [c for c in members if (sup[:, c] & (cnt > 1)).any()]
                members.remove(min(bad, key=lambda c: (m[:, c].sum(), -c)))
            if members:
                kept.append(tuple(members))
        out.append(first_fit(sup, grouping.alpha, m, kept))
    return Grouping(grouping.height, grouping.alpha, grouping.subword, out, shared=False)


def _row_bits(support: np.ndarray) -> np.ndarray:
    """rows x C bool -> C x W uint64 bitsets of the rows each column occupies."""
    rows, cols = support.shape
    words = max(1, -(-rows // 64))
    padded = np.zeros((words * 64, cols), dtype=bool)
    padded[:rows] = support
    packed = np.packbits(padded.reshape(words, 64, cols), axis=1, bitorder="little")   # words x 8 x C
    return np.ascontiguousarray(packed.transpose(2, 0, 1)).view(np.uint64).reshape(cols, words)


def column_combine(support: np.ndarray, alpha: int, gamma: float, window: int = 0,
                   progress=None) -> list[tuple[int, ...]]:
    """PackCNN column combining exactly as the original code groups columns (sequential best-fit).

    ``support`` is rows x Kv bool (nonzeros). Start with one group per nonzero column, in column order.
    Take the **first** group (in list order) that has a feasible partner and merge it with the partner
    that leaves the **fewest rows where both are zero** (ties: the lowest list index); the merged group
    keeps the first group's place, so one group is filled at a time. A pair is feasible when the merged
    group has at most ``alpha`` columns and the weights conflict pruning would remove from it,
    ``sum_rows max(0, u + v - 1)`` (u, v: nonzeros of each group in the row), are at most
    ``floor(gamma * rows)`` — gamma caps pruned weights, not conflicting rows (the original writes
    ``int(gamma * rows)``; ours adds 1e-9 before flooring so that e.g. 0.29 * 100 gives 29, not the
    float product's 28 — the two agree whenever gamma * rows is not a whole number). Stops when no pair is
    feasible. ``window`` > 0 combines columns only within consecutive windows of that many columns
    (the original's default is 256; 0: the whole matrix, our default).

    Implementation: a group passed over never becomes feasible again (merges only grow groups), so a
    pointer walks the list once; per merge the candidate figures of the current group against all
    others come from popcounts of row bitsets: with S the current group's occupied rows, a candidate
    with nonzeros b and occupied rows T, pruned = (nnz_S - |S|) + (nnz_b - |T|) + |S & T| and
    rows-both-zero = rows - |S| - |T| + |S & T|.
    """
    sup = np.asarray(support, dtype=bool)
    rows, kv = sup.shape
    if window and window > 0:
        out = []
        for start in range(0, kv, window):
            part = column_combine(sup[:, start:start + window], alpha, gamma, 0, progress)
            out.extend(tuple(start + c for c in g) for g in part)
        return out
    limit = math.floor(gamma * rows + 1e-9)
    cols = np.nonzero(sup.any(axis=0))[0]
    members = [[int(c)] for c in cols]
    g = len(members)
    if g < 2:
        return [tuple(m) for m in members]
    bits = _row_bits(sup[:, cols])                       # G x W
    nnz = sup[:, cols].sum(axis=0).astype(np.int64)      # nonzeros of each group
    occ = np.bitwise_count(bits).sum(axis=1).astype(np.int64)   # rows each group occupies
    size = np.ones(g, dtype=np.int64)
    alive = np.ones(g, dtype=bool)
    cur = 0
    while cur < g:
        if not alive[cur] or size[cur] >= alpha:
            cur += 1
            continue
        inter = np.bitwise_count(bits & bits[cur]).sum(axis=1).astype(np.int64)
        pruned = (nnz[cur] - occ[cur]) + (nnz - occ) + inter
        feasible = alive & (size + size[cur] <= alpha) & (pruned <= limit)
        feasible[cur] = False
        if not feasible.any():
            cur += 1
            continue
        both_zero = rows - occ[cur] - occ + inter
        cand = np.nonzero(feasible)[0]
        other = int(cand[np.argmin(both_zero[cand])])   # argmin: the lowest index among ties
        members[cur].extend(members[other])
        bits[cur] |= bits[other]
        nnz[cur] += nnz[other]
        occ[cur] = int(np.bitwise_count(bits[cur]).sum())
        size[cur] += size[other]
        alive[other] = False
        if progress is not None:
            progress(int(alive.sum()))
    return [tuple(sorted(members[i])) for i in np.nonzero(alive)[0]]


# ---------------------------------------------------------------------------------------------
# PE entry and ROM format
# ---------------------------------------------------------------------------------------------
def sel_bits(alpha: int) -> int:
    return max(1, math.ceil(math.log2(alpha)))


def entry_layout(alpha: int, subword: bool, weight_bits: int = 8) -> data.StructLayout:
    """The packed PE word: ``weight`` (signed) + ``sel``; subword: ``sub`` (signed 4) + ``shift`` + ``sel``."""
    if subword:
        return data.StructLayout({"sub": signed(SUB_BITS), "shift": unsigned(1), "sel": unsigned(sel_bits(alpha))})
    return data.StructLayout({"weight": signed(weight_bits), "sel": unsigned(sel_bits(alpha))})


def encode_fields(layout: data.StructLayout, **fields) -> np.ndarray:
    """Field arrays -> integer words laid out exactly as the Amaranth struct (range-checked)."""
    words = None
    for name, fld in layout:
        val = np.asarray(fields[name], dtype=np.int64)
        lo, hi = ((-(1 << (fld.width - 1)), (1 << (fld.width - 1)) - 1) if fld.shape.signed
                  else (0, (1 << fld.width) - 1))
        if val.size and (val.min() < lo or val.max() > hi):
            raise ValueError(f"entry field {name} out of range [{lo}, {hi}]")
        part = (val & ((1 << fld.width) - 1)) << fld.offset
        words = part if words is None else words | part
    return words


def decode_fields(layout: data.StructLayout, words) -> dict[str, np.ndarray]:
    """Integer words -> field arrays (signed fields sign-extended)."""
    w = np.asarray(words, dtype=np.int64)
    out = {}
    for name, fld in layout:
        val = (w >> fld.offset) & ((1 << fld.width) - 1)
        if fld.shape.signed:
            val = np.where(val >= (1 << (fld.width - 1)), val - (1 << fld.width), val)
        out[name] = val
    return out


def entry_width(alpha: int, subword: bool, weight_bits: int = 8) -> int:
    return entry_layout(alpha, subword, weight_bits).size


def pack_matrix(scheme: str, w, grouping: Grouping, weight_bits: int = 8, extra_meta=None) -> "PackedLayer":
    """Integer N x K weights + a lossless grouping -> :class:`~.schemes.base.PackedLayer`.

    Raises ``ValueError`` when the grouping would drop a nonzero (callers repair first).
    """
    from .schemes.base import PackedLayer, Rom
    w = np.asarray(w, dtype=np.int64)
    n, k = w.shape
    v = virtual_matrix(w, grouping.subword)
    kv = v.shape[1]
    h, alpha = grouping.height, grouping.alpha
    grouping.per_section(n).validate(n, kv)
    if not is_lossless(v, grouping):
        raise ValueError("grouping does not hold every nonzero weight without conflict")
    layout = entry_layout(alpha, grouping.subword, weight_bits)
    n_sec = section_count(n, h)
    tables = grouping.sections if not grouping.shared else [grouping.sections[0]]
    lane_width = max(1, int(k).bit_length())
    lane_words, perm = [], []
    for groups in tables:
        table = []
        for g in groups:
            ks = [column_of(c, grouping.subword) for c in g] + [-1] * (alpha - len(g))
            table.append(ks)
            lane_words.extend(kk + 1 for kk in ks)
        perm.append(table)
    entry_words, widths = [], []
    for s in range(n_sec):
        groups = grouping.sections[0 if grouping.shared else s]
        widths.append(len(groups))
        block = np.zeros((h, kv), dtype=np.int64)
        rows = v[section_rows(n, h, s)]
        block[:len(rows)] = rows
        if not groups:
            continue
        gl = len(groups)
        val = np.zeros((gl, h), dtype=np.int64)
        sel = np.zeros((gl, h), dtype=np.int64)
        shift = np.zeros((gl, h), dtype=np.int64)
        for gi, g in enumerate(groups):
            sub = block[:, list(g)]                       # h x members, at most one nonzero per row
            nz = sub != 0
            has = nz.any(axis=1)
            lane = np.argmax(nz, axis=1)
            val[gi] = np.where(has, sub[np.arange(h), lane], 0)
            sel[gi] = np.where(has, lane, 0)
            shift[gi] = np.where(has, np.array(g)[lane] & 1, 0) if grouping.subword else 0
        if grouping.subword:
            words = encode_fields(layout, sub=val, shift=shift, sel=sel)
        else:
            words = encode_fields(layout, weight=val, sel=sel)
        entry_words.extend(int(x) for x in words.ravel())
    meta = {"n": n, "k": k, "alpha": alpha, "section_height": h, "sections": n_sec,
            "subword": bool(grouping.subword), "shared": bool(grouping.shared), "weight_bits": weight_bits,
            "sel_bits": sel_bits(alpha), "entry_width": layout.size, "lane_width": lane_width,
            "widths": widths, "permutation": perm}
    if extra_meta:
        meta.update(extra_meta)
    return PackedLayer(scheme, meta, {"entries": Rom(layout.size, entry_words),
                                      "lanes": Rom(lane_width, lane_words)})


def _lane_tables(packed) -> list[np.ndarray]:
    m = packed.meta
    words = np.asarray(packed.roms["lanes"].words, dtype=np.int64) - 1
    tables, pos = [], 0
    for s in range(1 if m["shared"] else m["sections"]):
        g = m["widths"][s]
        tables.append(words[pos:pos + g * m["alpha"]].reshape(g, m["alpha"]))
        pos += g * m["alpha"]
    return tables


def check_packed(packed) -> None:
    """ROM depths and lane table must agree with the meta (SparsynError names the mismatch)."""
    m = packed.meta
    try:
        depth = sum(m["widths"]) * m["section_height"]
        lanes = (m["widths"][0] if m["shared"] and m["widths"] else sum(m["widths"]) if not m["shared"] else 0) * m["alpha"]
        if packed.roms["entries"].depth != depth or packed.roms["lanes"].depth != lanes or len(m["widths"]) != m["sections"]:
            raise SparsynError(f"packed layer ({packed.scheme}) ROM sizes do not match its widths {m['widths']}; "
                               "the manifest and ROM files are from different runs, re-run 'sparsyn compress'")
        if [t.tolist() for t in _lane_tables(packed)] != m["permutation"]:
            raise SparsynError(f"packed layer ({packed.scheme}) lane ROM differs from the permutation in the "
                               "manifest; re-run 'sparsyn compress'")
    except KeyError as err:
        raise SparsynError(f"packed layer ({packed.scheme}) meta lacks {err}; re-run 'sparsyn compress'") from None


def decode_packed(packed) -> np.ndarray:
    """ROMs -> the exact N x K integer matrix (sum of every entry's coefficient at its lane)."""
    check_packed(packed)
    m = packed.meta
    n, k, h = m["n"], m["k"], m["section_height"]
    layout = entry_layout(m["alpha"], m["subword"], m["weight_bits"])
    f = decode_fields(layout, packed.roms["entries"].words)
    coeff = f["sub"] << (4 * f["shift"]) if m["subword"] else f["weight"]
    sel = f["sel"]
    tables = _lane_tables(packed)
    w = np.zeros((m["sections"] * h, k), dtype=np.int64)
    pos = 0
    for s in range(m["sections"]):
        g = m["widths"][s]
        table = tables[0 if m["shared"] else s]
        c = coeff[pos:pos + g * h].reshape(g, h)
        sl = sel[pos:pos + g * h].reshape(g, h)
        pos += g * h
        kk = table[np.arange(g)[:, None], sl]              # g x h lane column of each entry
        nz = c != 0
        if (kk[nz] < 0).any():
            raise SparsynError("packed entry selects an unused lane; the ROM is corrupt, re-run 'sparsyn compress'")
        rows = s * h + np.broadcast_to(np.arange(h)[None, :], (g, h))
        np.add.at(w, (rows[nz], kk[nz]), c[nz])
    return w[:n]


def entry_coefficients(packed, entry: int) -> tuple[int, ...]:
    m = packed.meta
    f = decode_fields(entry_layout(m["alpha"], m["subword"], m["weight_bits"]), [entry])
    c = int(f["sub"][0]) << (4 * int(f["shift"][0])) if m["subword"] else int(f["weight"][0])
    out = [0] * m["alpha"]
    out[int(f["sel"][0])] = c
    return tuple(out)


def tile_program(packed, layer, array: ArrayConfig) -> TileProgram:
    """One slot per packed group: lanes = the group's alpha columns, entries = the section's words."""
    m = packed.meta
    h = m["section_height"]
    if array.cols != h:
        raise SparsynError(f"layer {layer.name} was grouped ({packed.scheme}) for row sections of {h} output "
                           f"channels but the array has {array.cols} columns; re-run 'sparsyn compress --array "
                           f"{array.rows}x{array.cols}'")
    check_packed(packed)
    words = np.asarray(packed.roms["entries"].words, dtype=np.int64)
    tables = _lane_tables(packed)
    sections, pos = [], 0
    for s in range(m["sections"]):
        table = tables[0 if m["shared"] else s]
        slots = []
        for g in range(m["widths"][s]):
            slots.append(Slot(tuple(int(x) for x in table[g]), tuple(int(x) for x in words[pos:pos + h])))
            pos += h
        sections.append(slots)
    return TileProgram(ArrayConfig(array.rows, array.cols, m["alpha"]), m["n"], m["k"], m["entry_width"], sections)


def packed_stats(packed, layer) -> dict:
    """Slots and bits: matrix rate = N*K / packed slots; bit rate = 8*N*K / ROM bits (incl. index bits)."""
    m = packed.meta
    n, k, h = m["n"], m["k"], m["section_height"]
    slots = sum(len(range(n)[section_rows(n, h, s)]) * m["widths"][s] for s in range(m["sections"]))
    entries = packed.roms["entries"].depth
    index_bits = entries * m["sel_bits"] + packed.roms["lanes"].bits
    flag_bits = entries if m["subword"] else 0
    nnz = int(np.count_nonzero(layer.weight))
    return {"dense_slots": n * k, "packed_slots": slots, "nonzero": nnz,
            "rom_bits": packed.rom_bits, "index_bits": index_bits, "flag_bits": flag_bits,
            "matrix_rate": n * k / max(1, slots), "bit_rate": 8 * n * k / max(1, packed.rom_bits),
            "density_bound": n * k / max(1, nnz), "groups": sum(m["widths"]), "alpha": m["alpha"],
            "section_height": h}
