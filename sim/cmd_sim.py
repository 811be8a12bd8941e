"""``sparsyn sim``: run the RTL of every layer of a manifest against the golden model, print a table."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("sim", help="RTL of every layer of a manifest vs the golden model (Icarus/Verilator)",
                       description="Generate each conv/linear layer's engine and each max-pool / average-pool / "
                                   "add layer's stream unit, simulate it with cocotb in Icarus or Verilator on the "
                                   "reference vectors stored in the manifest (the tensors each layer reads; the "
                                   "golden model from the ROM files must reproduce them), and print per layer: "
                                   "cycles measured / modelled (must be equal), PE utilization (compute layers), "
                                   "bit-exact yes/no. Exits 1 if any layer is not bit-exact or not cycle-exact.")
    p.add_argument("--manifest", required=True, metavar="PATH", help="manifest.json or its folder "
                   "(from 'sparsyn compress')")
    p.add_argument("--simulator", default="verilator", metavar="{icarus,verilator}",
                   help="RTL simulator (default: verilator)")
    p.add_argument("--array", default=None, metavar="RxC",
                   help="systolic array size (default: the one the manifest was packed for; another is refused)")
    p.add_argument("--images", type=int, default=None,
                   help="images per layer (default: the manifest's reference images; more adds test images "
                        "of the data the manifest records, checked against the golden model)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from sparsyn.sw.errors import SparsynError
    from sparsyn.sw.report import write_json
    from sparsyn.sw.schedule import ArrayConfig

    from .check import format_table, rtl_check
    from .tools import check_simulator

    check_simulator(args.simulator)            # unknown / missing simulator: one line, before any work
    array = ArrayConfig.parse(args.array) if args.array else None
    try:
        rows = rtl_check(args.manifest, simulator=args.simulator, array=array, images=args.images)
    except NotImplementedError as err:
        raise SparsynError(f"{err}; simulate a manifest compressed with a scheme that has hardware "
                           "(e.g. 'sparsyn compress --scheme dense')") from None
    print()
    print(format_table(rows))
    bad = [r for r in rows if not (r["bit_exact"] and r.get("cycles_exact"))]
    for r in bad:
        print(f"NOT exact: {r['mismatch']}")
    if args.json:
        write_json(Path(args.json), {"manifest": str(args.manifest), "simulator": args.simulator,
                                     "array": rows[0].get("array") if rows else None, "images": args.images,
                                     "layers": rows})
    return 1 if bad else 0
