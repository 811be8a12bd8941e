"""Compression schemes. Each module registers one or more :class:`~.base.Scheme` subclasses."""
import importlib

from .base import Option, PackedLayer, Rom, Scheme, get_scheme, register, scheme_names  # noqa: F401

#: Scheme modules, in the order ``sparsyn run`` reports them. A module that is not there yet is skipped.
SCHEME_MODULES = ["dense", "packcnn", "tight", "ternary"]


def _import_schemes():
    for mod in SCHEME_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{mod}":
                raise


_import_schemes()
_load_all = True
