"""``sparsyn compress``: model -> manifest + ROM files + report.json."""
from __future__ import annotations

from .errors import SparsynError
from .report import format_table


def parse_options(pairs: list[str] | None) -> dict:
    """``["alpha=4", "density=0.2"]`` -> dict (values typed by the scheme's Option)."""
    opts = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SparsynError(f"scheme option {pair!r} is not of the form NAME=VALUE; e.g. --opt density=0.3")
        opts[key.strip()] = value.strip()
    return opts


#: The stored-bits table of ``compress`` (per layer + total).
BIT_TABLE = ["layer", "scheme", "n", "k", "nonzero", "weight_bits", "index_bits", "other_bits", "stored_bits",
             "rate_vs_int8", "rate_vs_fp32", "weights_rate_vs_int8"]


def summary_line(report: dict) -> str:
    acc = report["accuracy"]
    return (f"accuracy: float {acc['float']:.2f} %, compressed float {acc['compressed_float']:.2f} %, "
            f"integer {acc['int']:.2f} %;  stored {report['stored_bits']} bits = weights {report['weight_bits']} "
            f"+ index {report['index_bits']} + other {report['other_bits']} "
            f"({report['rate_vs_int8']:.2f}x vs int8, {report['rate_vs_fp32']:.2f}x vs fp32; weights only "
            f"{report['weights_rate_vs_int8']:.2f}x vs int8)")


def add_parser(sub):
    p = sub.add_parser("compress", help="compress a model into packed weight ROMs + manifest",
                       description="Compress a model with one scheme; writes DIR/manifest.json, "
                                   "DIR/<layer>.<rom>.hex and DIR/report.json. "
                                   "'sparsyn schemes' lists schemes and their options.")
    p.add_argument("--model", default="default",
                   help="'default' (built-in digits CNN) or a file saved with torch.save(module, PATH)")
    p.add_argument("--scheme", default="dense", help="compression scheme (default: dense)")
    p.add_argument("--opt", action="append", metavar="NAME=VALUE", help="scheme option, repeatable")
    p.add_argument("--array", default="4x4", metavar="RxC",
                   help="systolic array the layers are packed for (default 4x4); recorded in the manifest, "
                        "and generate / sim / build use it")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (a previous sparsyn output there is replaced atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from .compress import compress

    from .schedule import ArrayConfig

    from sparsyn.hw.descriptor import manifest_descriptor

    array = ArrayConfig.parse(args.array)
    report = compress(args.model, args.scheme, parse_options(args.opt), args.out, progress=not args.quiet,
                      log=(lambda *a, **k: None) if args.quiet else print, array=array,
                      descriptor=manifest_descriptor)
    rows = list(report["layers"])
    if report.get("descriptor_bits"):     # the sequenced engine's per-layer table: stored like every ROM
        bits = report["descriptor_bits"]
        rows.append({"layer": "descriptor", "scheme": "table", "weight_bits": 0, "index_bits": 0,
                     "other_bits": bits, "stored_bits": bits})
    print(format_table(rows + [{"layer": "TOTAL", **report}], BIT_TABLE,
                       title=f"{report['model']} compressed with {report['scheme']} for a {array} array "
                             "(bits the chip stores: weights / index / other = tables + constants)"))
    print(summary_line(report))
    print(f"manifest: {report['manifest']}")
    return 0
