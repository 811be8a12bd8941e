"""Per-scheme PE datapaths (``ProductUnit`` subclasses), registered by scheme name."""
import importlib

from .base import ProductUnit, make_product, register_product  # noqa: F401

HW_SCHEME_MODULES = ["dense", "tight", "ternary"]

for _mod in HW_SCHEME_MODULES:
    try:
        importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _err:
        if _err.name != f"{__name__}.{_mod}":
            raise
_load_all = True
