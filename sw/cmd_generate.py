"""``sparsyn generate``: manifest -> Verilog of every layer (+ waivers, JSON listing), optionally linted."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("generate", help="generate the Verilog of every layer of a compressed model",
                       description="Elaborate one LayerEngine per conv/linear layer and one pool unit per "
                                   "max / average pool of a manifest and write sparsyn_<layer>.v, sparsyn_lint.vlt "
                                   "(Verilator waivers) and sparsyn-rtl.json (ports, cycle model) to DIR.")
    p.add_argument("--manifest", required=True, metavar="PATH", help="manifest.json or its folder")
    p.add_argument("--array", default=None, metavar="RxC",
                   help="systolic array size (default: the one the manifest was packed for; another is refused)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: work/rtl)")
    p.add_argument("--lint", action="store_true", help="run 'verilator --lint-only -Wall' on every file")
    p.add_argument("--model-top", action="store_true",
                   help="also write sparsyn_model_<model>.v, the whole network behind one LayerEngine-style interface")
    p.set_defaults(func=run)


def run(args) -> int:
    from sparsyn.sw.paths import work_dir
    from sparsyn.sw.report import format_table
    from sparsyn.sw.schedule import ArrayConfig

    from sparsyn.hw.generate import LISTING_NAME, generate
    from sparsyn.sim.lint import lint

    array = ArrayConfig.parse(args.array) if args.array else None
    out = Path(args.out) if args.out else work_dir() / "rtl"
    files = generate(args.manifest, array, out, model_top=args.model_top)
    import json
    doc = json.loads((out / LISTING_NAME).read_text())
    rows = []
    for rec in doc["modules"]:
        cyc = rec["cycles"]
        rows.append({"layer": rec["layer"], "kind": rec["kind"], "module": rec["module"],
                     "cycles": cyc["total"], "utilization": cyc.get("utilization")})
        if args.lint:
            lint(out / rec["file"], rec["module"])
            rows[-1]["lint"] = "clean"
    cols = ["layer", "kind", "module", "cycles", "utilization"] + (["lint"] if args.lint else [])
    a = doc["array"]
    print(format_table(rows, cols, title=f"Verilog for {doc['model']} on a {a['rows']}x{a['cols']} array"))
    print(f"{len(files)} files in {out}")
    return 0
