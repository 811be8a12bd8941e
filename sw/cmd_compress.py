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


def add_parser(sub):
    p = sub.add_parser("compress", help="compress a model into packed weight ROMs + manifest",
                       description="Compress a model with one scheme; writes DIR/manifest.json, "
                                   "DIR/<layer>.<rom>.hex and DIR/report.json. "
                                   "'sparsyn schemes' lists schemes and their options.")
    p.add_argument("--model", default="default",
                   help="'default' (built-in digits CNN) or a file saved with torch.save(module, PATH)")
    p.add_argument("--scheme", default="dense", help="compression scheme (default: dense)")
    p.add_argument("--opt", action="append", metavar="NAME=VALUE", help="scheme option, repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from .compress import compress

    report = compress(args.model, args.scheme, parse_options(args.opt), args.out, progress=not args.quiet,
                      log=(lambda *a, **k: None) if args.quiet else print)
    acc = report["accuracy"]
    print(format_table(report["layers"], ["layer", "kind", "scheme", "n", "k", "nonzero", "rom_bits",
                                          "rate_vs_int8", "rate_vs_fp32"],
                       title=f"{report['model']} compressed with {report['scheme']}"))
    print(f"accuracy: float {acc['float']:.2f} %, compressed float {acc['compressed_float']:.2f} %, "
          f"integer {acc['int']:.2f} %;  ROM {report['rom_bits']} bits "
          f"({report['rate_vs_int8']:.2f}x vs int8, {report['rate_vs_fp32']:.2f}x vs fp32)")
    print(f"manifest: {report['manifest']}")
    return 0
