"""``sparsyn schemes``: list compression schemes and their options."""
from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("schemes", help="list compression schemes and their options")
    p.set_defaults(func=run)


def run(args) -> int:
    from .schemes import get_scheme, scheme_names

    for name in scheme_names():
        cls = get_scheme(name)
        print(f"{name}: {cls.summary}")
        for key, opt in cls.options.items():
            print(f"    --opt {key}=<{opt.type.__name__}>  (default {opt.default!r})  {opt.help}")
    return 0
