"""Compression schemes: the registry.

:data:`REGISTRY` is the one explicit list of schemes: one line per scheme, ``name -> "module:Class"``
(the module under ``sparsyn.sw.schemes``), in the order ``sparsyn run`` reports them. Adding a
scheme = its files (see :mod:`.base`) + one line here. A listed module that is missing or does not
define the class fails loudly, naming it (a typo never drops a scheme silently).
"""
from __future__ import annotations

import importlib

from ..errors import SparsynError
from .base import DEFAULT_ARRAY, ROM_KINDS, Option, PackedLayer, Rom, Scheme  # noqa: F401

#: name -> "module:Class" (module relative to this package). Order = report order.
REGISTRY = {
    "dense": "dense:DenseScheme",
    "packcnn": "packcnn:PackCNNScheme",
    "tight": "tight:TightScheme",
    "ternary": "ternary:TernaryScheme",
    "pattern": "pattern:PatternScheme",
    "permdiag": "permdiag:PermDiagScheme",
}

_LOADED: dict[str, type[Scheme]] = {}


def _load(name: str) -> type[Scheme]:
    if name in _LOADED:
        return _LOADED[name]
    target = REGISTRY[name]
    mod_name, _, cls_name = target.partition(":")
    full = f"{__name__}.{mod_name}"
    try:
        mod = importlib.import_module(full)
    except ModuleNotFoundError as err:
        if err.name == full:
            raise SparsynError(f"scheme {name!r} is registered as {target!r} but module {full} does not exist; "
                               "fix its line in sparsyn.sw.schemes.REGISTRY") from None
        raise
    cls = getattr(mod, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Scheme)):
        raise SparsynError(f"scheme {name!r}: module {full} has no Scheme subclass {cls_name!r}; "
                           "fix its line in sparsyn.sw.schemes.REGISTRY")
    if cls.name != name:
        raise SparsynError(f"scheme class {full}.{cls_name} is named {cls.name!r} but registered as {name!r}; "
                           "make the registry line and the class name agree")
    _LOADED[name] = cls
    return cls


def scheme_names() -> list[str]:
    """Every registered scheme (each module is imported: a broken registry line fails here)."""
    for name in REGISTRY:
        _load(name)
    return list(REGISTRY)


def get_scheme(name: str) -> type[Scheme]:
    """The Scheme class registered as ``name``; unknown names fail with the list of known ones."""
    if name not in REGISTRY:
        raise SparsynError(f"unknown scheme {name!r}; available schemes: {', '.join(REGISTRY)}")
    return _load(name)
