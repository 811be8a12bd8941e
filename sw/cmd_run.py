"""``sparsyn run``: the main job on the built-in default — train/load the digits CNN, compress it with
every scheme, check the RTL of every layer against the golden model, print one table (+ JSON)."""
from __future__ import annotations

import time
from pathlib import Path

from .errors import SparsynError
from .report import format_table, write_json

COLUMNS = ["scheme", "float_acc", "int_acc", "rom_bits", "rate_vs_int8", "rate_vs_fp32",
           "rtl_layers", "rtl_bit_exact", "rtl_cycles", "rtl_utilization"]


def add_parser(sub):
    p = sub.add_parser("run", help="main job: default model -> every scheme -> ROMs, RTL check, report",
                       description="Compress the built-in digits CNN with every available scheme, "
                                   "write manifests + ROMs under the work folder, run each layer's RTL "
                                   "against the golden model, and print a summary table (JSON beside it).")
    p.add_argument("--schemes", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--simulator", default="verilator", choices=["icarus", "verilator"],
                   help="RTL simulator for the bit-exact check (default: verilator)")
    p.add_argument("--array", default="4x4", help="systolic array size RxC (default 4x4)")
    p.add_argument("--no-rtl", action="store_true", help="skip the RTL check")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: work/run)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .compress import compress
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
    rows, doc = [], {"schemes": {}, "array": str(array), "simulator": args.simulator}
    failed = False
    for name in names:
        t0 = time.time()
        print(f"== {name}: compressing")
        report = compress("default", name, {}, out / name, progress=True)
        row = {"scheme": name, "float_acc": report["accuracy"]["float"], "int_acc": report["accuracy"]["int"],
               "rom_bits": report["rom_bits"], "rate_vs_int8": report["rate_vs_int8"],
               "rate_vs_fp32": report["rate_vs_fp32"]}
        entry = {"compress": report}
        if rtl_check is not None:
            print(f"== {name}: RTL check ({args.simulator})")
            try:
                res = rtl_check(report["manifest"], simulator=args.simulator, array=array)
            except NotImplementedError as err:
                res = None
                row["rtl_bit_exact"] = None
                entry["rtl_error"] = str(err)
                print(f"   RTL not available: {err}")
            if res is not None:
                entry["rtl"] = res
                exact = all(r["bit_exact"] for r in res)
                failed |= not exact
                cyc = sum(r["cycles_measured"] for r in res)
                row.update(rtl_layers=len(res), rtl_bit_exact=exact, rtl_cycles=cyc,
                           rtl_utilization=(sum(r["utilization"] * r["cycles_measured"] for r in res) / cyc
                                            if cyc else None))
                for r in res:
                    if not r["bit_exact"]:
                        print(f"   {r['mismatch']}")
        entry["seconds"] = round(time.time() - t0, 1)
        doc["schemes"][name] = entry
        rows.append(row)
    print()
    print(format_table(rows, COLUMNS, title="sparsyn run — default digits model"))
    path = write_json(out / "run-report.json", doc)
    print(f"\nreport: {path}  (manifests and ROMs under {out})")
    return 1 if failed else 0
