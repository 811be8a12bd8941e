"""Mutation check: do the tests notice a wrong design? (``make mutate`` / ``sparsyn bench --mutants``)

Each :data:`MUTANTS` entry is one small, plausible bug in the hardware or numeric code — a text replacement in
one source file — and the tests that guard that code. For each mutant, in turn, a scratch copy of the source
tree is made (the working tree is never touched), the bug is applied there, and the tests run against the
scratch copy (``PYTHONPATH`` puts it first); the mutant is **killed** when they fail. Every mutant must be
killed; a mutant whose text no longer matches the source is reported as ``stale`` (the list must follow the code).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sparsyn.sw.errors import SparsynError


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str            # relative to the source root
    old: str
    new: str
    tests: tuple[str, ...]
    what: str


MUTANTS = [
    Mutant("requant_no_rounding", "hw/requant.py", "half.eq(1 << (shifts[0] - 1)[:SHIFT_BITS])", "half.eq(0)",
           ("tests/test_hw_requant.py",), "requant unit: rounding constant dropped (truncation)"),
    Mutant("requant_shift_off_by_one", "hw/requant.py", "shifted.eq(rounded >> shifts[3])",
           "shifted.eq(rounded >> (shifts[3] + 1))", ("tests/test_hw_requant.py",), "requant unit: shift one too far"),
    Mutant("contract_rounding", "sw/requant.py", "rounding = torch.bitwise_left_shift(torch.ones_like(shift), shift - 1)",
           "rounding = torch.bitwise_left_shift(torch.ones_like(shift), shift - 2)",
           ("tests/test_sw_golden.py", "tests/test_hw_requant.py"), "numeric contract: rounding at the wrong bit"),
    Mutant("im2col_padding_off_by_one", "hw/im2col.py",
           "m.d.sync += [ox.eq(0), oy.eq(0), self.pixel.eq(0), self.base_x.eq(p), self.base_y.eq(py)]",
           "m.d.sync += [ox.eq(0), oy.eq(0), self.pixel.eq(0), self.base_x.eq(p), self.base_y.eq(py + 1)]",
           ("tests/test_hw_im2col.py",), "im2col: first row's padding off by one"),
    Mutant("im2col_stride", "hw/im2col.py", "m.d.sync += [ox.eq(ox + 1), self.base_x.eq(self.base_x + s)]",
           "m.d.sync += [ox.eq(ox + 1), self.base_x.eq(self.base_x + 1)]",
           ("tests/test_hw_im2col.py",), "im2col: x stride ignored"),
    Mutant("im2col_axes_swapped", "hw/im2col.py", 'sy, s = axis_select(sel, ls, lambda l: l.stride_hw, "stride")',
           'sy, s = axis_select(sel, ls, lambda l: l.stride_hw[::-1], "stride")',
           ("tests/test_depthwise_nonsquare.py::test_im2col_per_axis_equals_golden_im2col",),
           "im2col: row and column strides swapped (a non-square stride)"),
    Mutant("ternary_sign", "hw/schemes/ternary.py", "Mux(code.neg, ~x, x)", "Mux(code.neg, x, ~x)",
           ("tests/test_hw_ternary.py",), "ternary PE: sign of the code swapped"),
    Mutant("maxpool_edge", "hw/maxpool.py", "with m.If((j > 1) & inside_q & (rd_q > best)):",
           "with m.If((j > 1) & (rd_q > best)):", ("tests/test_hw_maxpool.py",),
           "max-pool: padding positions take part in the max"),
    Mutant("avgpool_no_rounding", "hw/avgpool.py", "rounded.eq(prod + rounding)", "rounded.eq(prod)",
           ("tests/test_hw_avgpool.py::test_avgpool_matches_golden_cycle_exact",),
           "average pool: rounding constant dropped (truncation)"),
    Mutant("avgpool_reads_ignored_rows", "hw/avgpool.py", "(dy <= kh1) & (oy <= ho1)", "(dy <= kh1)",
           ("tests/test_hw_avgpool.py::test_avgpool_matches_golden_cycle_exact",),
           "average pool: rows past the last whole window added into the last band's windows"),
    Mutant("add_no_rounding", "hw/add.py", "rounded.eq(total + rounding)", "rounded.eq(total)",
           ("tests/test_hw_add.py::test_add_unit_matches_golden",), "residual add: rounding constant dropped"),
    Mutant("add_rounds_half_down", "hw/add.py", "[1 << (s - 1) for s in shifts]",
           "[(1 << (s - 1)) - 1 for s in shifts]",
           ("tests/test_hw_add.py::test_add_unit_edges",), "residual add: ties rounded down, not up"),
    Mutant("add_clamp_off_by_one", "hw/requant.py", "with m.If(value > ACT_MAX):", "with m.If(value > ACT_MAX + 1):",
           ("tests/test_hw_add.py::test_add_unit_edges",), "residual add: 128 wraps to -128 instead of clamping"),
    Mutant("add_no_relu_clamp", "hw/requant.py", "lo = Mux(relu, 0, ACT_MIN) if isinstance(relu, Value)",
           "lo = ACT_MIN if isinstance(relu, Value)",
           ("tests/test_hw_add.py::test_add_unit_edges",), "residual add: the ReLU clamp dropped"),
    Mutant("add_ignores_back_pressure", "hw/add.py", "advance.eq(~valid[-1] | self.o.ready)", "advance.eq(1)",
           ("tests/test_hw_add.py::test_add_unit_stalls",), "residual add: the pipeline runs over a stalled output"),
    Mutant("cycle_model_plus_one", "hw/cycles.py", "+ AccumulatorBuffer.write_latency)",
           "+ AccumulatorBuffer.write_latency + 1)", ("tests/test_hw_engine.py",),
           "cycle model of the array engine one cycle long"),
    Mutant("permdiag_cycle_model", "hw/permdiag_plan.py",
           "return START_REGISTER + ARM_CYCLES + nonzeros * slots + 1 + flush_cycles()",
           "return START_REGISTER + ARM_CYCLES + nonzeros * slots + flush_cycles()", ("tests/test_hw_permdiag.py",),
           "permdiag cycle model one cycle short (the engine unchanged)"),
    Mutant("permdiag_zero_skip_count", "hw/nonzero_buffer.py", "m.d.sync += wptr.eq(wptr + nonzero)",
           "m.d.sync += wptr.eq(wptr + 1)", ("tests/test_hw_permdiag.py",),
           "permdiag nonzero detector: zeros buffered too (outputs right, cycles not)"),
    Mutant("permdiag_row", "hw/permdiag_pe.py", "m.d.comb += diff.eq(self.jj - self.k[lane])",
           "m.d.comb += diff.eq(self.k[lane] - self.jj)", ("tests/test_hw_permdiag.py",),
           "permdiag PE: row (k - jj) instead of (jj - k)"),
    Mutant("permdiag_accumulator_sign", "hw/permdiag_pe.py",
           "c_delta.eq(lo_sum[h].as_unsigned() - b_prod[-1].as_unsigned())",
           "c_delta.eq(lo_sum[h].as_unsigned())", ("tests/test_hw_permdiag.py",),
           "permdiag PE: the product's sign dropped from the high half"),
    Mutant("permdiag_lane_select", "hw/permdiag_engine.py", "d2_acc.eq(mux_tree(d1_u, lanes))",
           "d2_acc.eq(mux_tree(d1_u ^ 1, lanes))", ("tests/test_hw_permdiag.py",),
           "permdiag drain: the neighbouring lane's accumulator read"),
    Mutant("dense_pe_entry_sign", "hw/schemes/dense.py", "self.product.eq(self.entry.weight * self.x[0])",
           "self.product.eq(self.entry.weight.as_unsigned() * self.x[0])", ("tests/test_hw_pe.py",),
           "dense PE: weight taken as unsigned"),
    Mutant("pattern_zero_id", "hw/schemes/pattern.py",
           "m.d.comb += self.product.eq(Mux(self.entry.id == len(self.table), 0, level[0]))",
           "m.d.comb += self.product.eq(level[0])", ("tests/test_formal.py::test_fast_proof_passes",),
           "pattern PE: the zero id multiplies its (ignored) weights"),
    Mutant("pack_swapped_entries", "sw/array_format.py", "bits |= e << (col * ew)", "bits |= e << ((c - 1 - col) * ew)",
           ("tests/test_sw_manifest.py", "tests/test_hw_engine.py"), "array ROM format: PE columns swapped in a word"),
    Mutant("sequenced_handover_short", "hw/sequenced_engine.py", "with m.If(count == n_next - 1):",
           "with m.If(count == n_next - 2):", ("tests/test_hw_sequenced_engine.py::test_whole_model_on_one_datapath",),
           "sequenced engine: the next layer starts one input element early"),
    Mutant("per_layer_select_first", "hw/per_layer.py",
           "self.m.d.comb += sig.eq(scope.read(f\"{self.key}.{name}\", shape, self.names, values, self.port))",
           "self.m.d.comb += sig.eq(Const(values[0], shape))",
           ("tests/test_hw_sequenced_engine.py::test_whole_model_on_one_datapath",),
           "shared datapath: every layer gets the first layer's value instead of its descriptor field"),
    Mutant("descriptor_field_shifted", "hw/descriptor.py",
           "bits = port.data[f.offset:f.offset + f.width]",
           "bits = port.data[f.offset + 1:f.offset + f.width + 1]",
           ("tests/test_hw_sequenced_engine.py::test_whole_model_on_one_datapath",),
           "descriptor table: every field read one bit off its place in the word"),
]


def source_root() -> Path:
    return Path(__file__).resolve().parents[1]


def _scratch(root: Path) -> Path:
    """A scratch copy of the source tree importable as ``sparsyn`` (``scratch/sparsyn/{sw,hw,sim,boards}``)."""
    tmp = Path(tempfile.mkdtemp(prefix="sparsyn-mutant-"))
    pkg = tmp / "sparsyn"
    pkg.mkdir()
    for part in ("sw", "hw", "sim", "boards"):
        shutil.copytree(root / part, pkg / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "tests", tmp / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml",):
        shutil.copy(root / f, tmp / f)
    return tmp


def run_mutant(mutant: Mutant, root: Path | None = None, timeout: int = 900) -> dict:
    """Apply one mutant in a scratch copy and run its tests; ``status`` killed / survived / stale."""
    root = root or source_root()
    src = (root / mutant.file).read_text()
    if src.count(mutant.old) != 1:
        return {"mutant": mutant.name, "status": "stale", "what": mutant.what, "seconds": 0.0,
                "note": f"{mutant.file} holds {src.count(mutant.old)} copies of the text to mutate"}
    tmp = _scratch(root)
    t0 = time.time()
    try:
        part, rest = mutant.file.split("/", 1)
        target = tmp / "sparsyn" / part / rest
        target.write_text(src.replace(mutant.old, mutant.new))
        env = dict(os.environ, PYTHONPATH=f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                   SPARSYN_WORK=str(root / "work"))
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests]
        try:
            res = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
            # the scratch copy must be what ran: its path appears in a failure, and never the working tree's
            status = "killed" if res.returncode != 0 else "survived"
            tail = (res.stdout + res.stderr).strip().splitlines()[-1:] or [""]
        except subprocess.TimeoutExpired:
            status, tail = "killed", ["timeout (the mutant hangs the tests)"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"mutant": mutant.name, "status": status, "what": mutant.what, "seconds": round(time.time() - t0, 1),
            "tests": " ".join(mutant.tests), "note": tail[0][:160]}


def check_scratch_import(root: Path | None = None) -> None:
    """The scratch copy is what the tests import (else every mutant would 'survive' against the working tree)."""
    root = root or source_root()
    tmp = _scratch(root)
    try:
        env = dict(os.environ, PYTHONPATH=f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        out = subprocess.run([sys.executable, "-c", "import sparsyn.hw.requant as r; print(r.__file__)"], cwd=tmp,
                             env=env, capture_output=True, text=True).stdout.strip()
        if not out.startswith(str(tmp)):
            raise SparsynError(f"the mutation scratch copy is not imported first ({out}); run from a checkout with "
                               "an editable install")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_mutants(names=None, log=print, control: bool = True) -> list[dict]:
    """Run the mutants (all, or ``names``); first, with ``control``, each distinct test set on an unmutated scratch
    copy, which must pass (a test set that fails anyway would 'kill' every mutant)."""
    check_scratch_import()
    chosen = [m for m in MUTANTS if names is None or m.name in names]
    if control:
        for tests in dict.fromkeys(m.tests for m in chosen):
            base = next(m for m in chosen if m.tests == tests)
            row = run_mutant(Mutant("control", base.file, base.old, base.old, tests, "no change"))
            log(f"control run of {' '.join(tests)}: {row['note']}")
            if row["status"] != "survived":
                raise SparsynError(f"the tests {' '.join(tests)} fail without any mutant ({row['note']}); fix them first")
    rows = []
    for i, mutant in enumerate(chosen):
        log(f"[{i + 1}/{len(chosen)}] {mutant.name}: {mutant.what} ...")
        row = run_mutant(mutant)
        log(f"      {row['status']} ({row['seconds']} s)")
        rows.append(row)
    return rows


def run_mutant_bench(quick: bool = False, out=None) -> dict:
    """``sparsyn bench --mutants``: every mutant, a table, JSON under work/bench/mutants.json."""
    from sparsyn.sw.paths import work_dir
    from sparsyn.sw.report import format_table, write_json
    rows = run_mutants()
    killed = sum(r["status"] == "killed" for r in rows)
    print(format_table(rows, ["mutant", "status", "seconds", "what", "tests"],
                       title=f"mutation check: {killed} of {len(rows)} mutants killed (every one must be)"))
    doc = {"killed": killed, "total": len(rows), "rows": rows}
    write_json(Path(out) if out else work_dir() / "bench" / "mutants.json", doc)
    if killed != len(rows):
        raise SparsynError(f"{len(rows) - killed} mutant(s) survived or are stale: "
                           + ", ".join(r["mutant"] for r in rows if r["status"] != "killed"))
    return doc
