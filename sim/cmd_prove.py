"""``sparsyn prove [UNIT]``: formal proofs of the PEs and units against their software specs (SymbiYosys + Z3)."""
from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("prove", help="formal proofs: every PE datapath and unit vs its software spec",
                       description="Build each proof harness (the unit, all inputs at once, the reference taken from "
                                   "the software spec), run SymbiYosys with Z3 on it (k-induction, or bounded model "
                                   "checking to a stated depth) and print one row per proof; a JSON summary goes "
                                   "beside the logs (work/prove/prove.json). Exits 1 if any proof does not pass.")
    p.add_argument("unit", nargs="?", default=None,
                   help="a unit (pe, requant, ...) or one proof's name (default: all)")
    p.add_argument("--fast", action="store_true", help="skip the slow proofs (those marked slow)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for the harnesses and logs (default: work/prove)")
    p.set_defaults(func=run)


def run(args) -> int:
    from sparsyn.sim.formal import run_proofs
    from sparsyn.sw.report import format_table
    rows = run_proofs(args.unit, args.out, include_slow=not args.fast)
    print()
    print(format_table(rows, ["unit", "name", "mode", "depth", "status", "seconds", "states"],
                      title="sparsyn prove — SymbiYosys + Z3; prove = k-induction (all reachable states), bmc = every "
                            "input sequence up to depth cycles"))
    return 0 if all(r["status"] == "pass" for r in rows) else 1
