"""``sparsyn run``: the main job on the built-in default — train/load the digits CNN, compress it with
every scheme for one array, check the RTL of every layer against the golden model and the stored
reference vectors, print one table (+ JSON).

The table's size columns are the bits the chip stores, read from each manifest's ROM records (every
memory the generated design initialises): ``weight_bits`` / ``index_bits`` / ``other_bits`` (pass
tables + bias + requant constants) and their sum ``stored_bits``; ``rate_vs_int8`` / ``rate_vs_fp32``
are computed from that total, ``weights_rate_vs_int8`` from the weight memory alone (the old,
weights-only figure, labelled as such).
"""
from __future__ import annotations

import time
from pathlib import Path

from .errors import SparsynError
from .report import format_table, write_json

COLUMNS = ["scheme", "float_acc", "int_acc", "weight_bits", "index_bits", "other_bits", "stored_bits",
           "rate_vs_int8", "rate_vs_fp32", "weights_rate_vs_int8",
           "rtl_layers", "rtl_bit_exact", "rtl_cycles", "cycles_exact", "rtl_utilization"]
TITLE = ("sparsyn run — {model} on a {array} array: bits the chip stores (weights / index / other "
         "= tables + constants; rates vs int8 and fp32 from stored_bits; weights_rate_vs_int8 = weight memory "
         "only); RTL: bit-exact vs golden model and reference vectors, cycles_exact = measured == exact model")


def add_parser(sub):
    p = sub.add_parser("run", help="main job: default model -> every scheme -> ROMs, RTL check, report",
                       description="Compress the built-in digits CNN with every available scheme for one array, "
                                   "write manifests + ROMs under the work folder, run each layer's RTL "
                                   "against the golden model and the stored reference vectors, and print a "
                                   "summary table (JSON beside it).")
    p.add_argument("--schemes", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--simulator", default="verilator", choices=["icarus", "verilator"],
                   help="RTL simulator for the bit-exact check (default: verilator)")
    p.add_argument("--array", default="4x4", metavar="RxC",
                   help="systolic array the schemes pack for (passed to compress; the RTL check uses the "
                        "manifest's array); default 4x4")
    p.add_argument("--no-rtl", action="store_true", help="skip the RTL check")
    p.add_argument("--model", default="default",
                   help="the model to compress (as for 'sparsyn compress': default, zoo:NAME or a module file)")
    p.add_argument("--data", default=None, metavar="FILE.npz",
                   help="your own data (as for 'sparsyn compress': x float32 N×C×H×W or N×F, y int64 labels, "
                        "optional); default: the digits (a zoo model: its synthetic data)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: work/run)")
    p.set_defaults(func=run)


def manifest_bits(manifest) -> dict:
    """Bits the chip stores for a compressed model, from its (sealed) manifest's ROM records (the descriptor table
    included): ``weight_bits``,
    ``index_bits``, ``other_bits`` (table + constants), ``stored_bits``, and the dense weight count ``weights``."""
    from .manifest import read_manifest_json
    doc = read_manifest_json(Path(manifest))
    kinds = {"weights": 0, "index": 0, "table": 0, "constants": 0}
    dense = 0
    for rec in doc["layers"]:
        for rom in rec.get("roms", {}).values():
            kinds[rom["kind"]] += rom["width"] * rom["depth"]
        if rec["op"] in ("conv", "linear"):   # N x K weights, K = C_in * kh * kw
            dense += rec["out_shape"][0] * rec["in_shape"][0] * rec["kernel"][0] * rec["kernel"][1]
    if doc.get("descriptor"):                 # the sequenced engine's per-layer descriptor table
        kinds["table"] += doc["descriptor"]["width"] * doc["descriptor"]["depth"]
    return {"weight_bits": kinds["weights"], "index_bits": kinds["index"],
            "other_bits": kinds["table"] + kinds["constants"], "stored_bits": sum(kinds.values()), "weights": dense}


def size_row(report: dict) -> dict:
    """The size and accuracy columns of one scheme's row, from its compress report and manifest."""
    bits = manifest_bits(report["manifest"])
    if bits["stored_bits"] != report["stored_bits"]:
        raise SparsynError(f"the compress report says {report['stored_bits']} stored bits but the manifest's ROMs "
                           f"hold {bits['stored_bits']}; re-run 'sparsyn compress'")
    dense, stored = bits["weights"], bits["stored_bits"]
    acc = report["accuracy"] or {}                 # None: data without labels (see the report's reconstruction)
    return {"float_acc": acc.get("float"), "int_acc": acc.get("int"),
            **{k: bits[k] for k in ("weight_bits", "index_bits", "other_bits", "stored_bits")},
            "rate_vs_int8": 8 * dense / stored, "rate_vs_fp32": 32 * dense / stored,
            "weights_rate_vs_int8": 8 * dense / max(1, bits["weight_bits"])}


def rtl_row(res: list[dict]) -> dict:
    """The RTL columns of one scheme's row from ``rtl_check`` rows: layers, bit-exact (vs the golden
    model and the reference vectors), total measured cycles (compute layers and stream units: pools, adds),
    ``cycles_exact`` (every layer's measured cycles equal its exact model) and the PE utilization weighted by
    the compute layers' cycles."""
    from sparsyn.hw.stream_units import STREAM_KINDS
    exact = all(r["bit_exact"] and r.get("reference_exact", True) for r in res)
    cycles_exact = all(r.get("cycles_exact") is True for r in res)
    measured = [r["cycles_measured"] for r in res if r.get("cycles_measured") is not None]
    cyc = sum(measured) if len(measured) == len(res) else None
    compute = [r for r in res if r.get("scheme") not in STREAM_KINDS]
    util = None
    if cyc and compute and all(r.get("utilization") is not None for r in compute):
        util = sum(r["utilization"] * r["cycles_measured"] for r in compute) / sum(r["cycles_measured"]
                                                                                  for r in compute)
    return {"rtl_layers": len(res), "rtl_bit_exact": exact, "rtl_cycles": cyc, "cycles_exact": cycles_exact,
            "rtl_utilization": util}


def run(args) -> int:
    from .paths import work_dir
    from .schedule import ArrayConfig
    from .schemes import scheme_names

    array = ArrayConfig.parse(args.array)
    names = scheme_names() if not args.schemes else [s.strip() for s in args.schemes.split(",") if s.strip()]
    for name in names:
        if name not in scheme_names():
            raise SparsynError(f"unknown scheme {name!r}; available schemes: {', '.join(scheme_names())}")
    out = Path(args.out) if args.out else work_dir() / "run"
    rtl_check = None
    if not args.no_rtl:
        from sparsyn.sim.tools import check_simulator
        check_simulator(args.simulator)
        try:
            from sparsyn.sim.check import rtl_check
        except ImportError:
            print("note: RTL check not available in this build (sparsyn.sim.check missing)")
    from .compress import as_dataset, check_model_source
    from .outdir import check_out, output_lock
    out = check_out(out, RUN_REPORT, command="sparsyn run")     # before any work
    args.data = as_dataset(args.data)                           # a bad --data file or model: refused before any work
    check_model_source(args.model, args.data)
    with output_lock(out):
        out = check_out(out, RUN_REPORT, command="sparsyn run")
        return _run(args, names, array, out, rtl_check)


#: The run's report; written first as a placeholder (``status: running``), so that an interrupted run's folder
#: is still recognised as sparsyn's the next time.
RUN_REPORT = "run-report.json"


def _run(args, names, array, out: Path, rtl_check) -> int:
    from sparsyn.hw.descriptor import manifest_descriptor

    from .compress import compress
    write_json(out / RUN_REPORT, {"status": "running", "schemes": names})
    rows, doc = [], {"schemes": {}, "array": f"{array.rows}x{array.cols}", "simulator": args.simulator}
    failed = False
    for name in names:
        t0 = time.time()
        print(f"== {name}: compressing for a {array.rows}x{array.cols} array")
        report = compress(args.model, name, {}, out / name, progress=True, array=array,
                          descriptor=manifest_descriptor, data=args.data)
        row = {"scheme": name, **size_row(report)}
        entry = {"compress": report}
        if rtl_check is not None:
            print(f"== {name}: RTL check ({args.simulator})")
            try:
                res = rtl_check(report["manifest"], simulator=args.simulator)   # the manifest's array
            except NotImplementedError as err:
                res = None
                row["rtl_bit_exact"] = None
                entry["rtl_error"] = str(err)
                print(f"   RTL not available: {err}")
            if res is not None:
                entry["rtl"] = res
                row.update(rtl_row(res))
                failed |= not (row["rtl_bit_exact"] and row["cycles_exact"])
                for r in res:
                    if r.get("mismatch"):
                        print(f"   {r['mismatch']}")
        entry["seconds"] = round(time.time() - t0, 1)
        doc["schemes"][name] = entry
        rows.append(row)
    doc["table"] = rows
    print()
    model = "default digits model" if args.model == "default" else f"model {args.model}"
    print(format_table(rows, COLUMNS, title=TITLE.format(model=model, array=f"{array.rows}x{array.cols}")))
    doc["status"] = "done"
    path = write_json(out / RUN_REPORT, doc)
    print(f"\nreport: {path}  (manifests and ROMs under {out})")
    return 1 if failed else 0
