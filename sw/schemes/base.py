"""The scheme interface: every compression scheme is a plug-in of this one class.

A scheme has three faces:

* **software compression** — :meth:`Scheme.prepare` prunes / fine-tunes the float model (dense: no-op)
  and :meth:`Scheme.quantize_weights` turns a float N x K matrix into integers plus a per-channel scale;
* **ROM format** — :meth:`Scheme.pack` (integer layer -> :class:`PackedLayer`: JSON meta + ROM words)
  and its inverse :meth:`Scheme.decode` (-> the exact N x K integer matrix the golden model uses);
* **hardware** — :meth:`Scheme.entry_layout` (the packed PE word as an ``amaranth.lib.data`` layout),
  :meth:`Scheme.entry_coefficients` (the PE's linear map, the software model of the PE) and
  :meth:`Scheme.tile_program` (the schedule on the shared systolic array, see :mod:`..schedule`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from ..errors import SparsynError
from ..qmodel import QuantLayer
from ..schedule import ArrayConfig, TileProgram


@dataclass
class Option:
    """A documented, typed scheme option (exposed on the CLI as ``--opt name=value``)."""
    default: Any
    help: str
    type: Callable = float
    check: Callable[[Any], str | None] | None = None  # returns an error text, or None when valid


def parse_bool(v) -> bool:
    """Option type for on/off options: bools, 0/1, and the words true/false, yes/no, on/off."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)) and v in (0, 1):
        return bool(v)
    text = str(v).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(v)


parse_bool.__name__ = "bool (0/1)"


@dataclass
class Rom:
    """One ROM image: ``depth`` words of ``width`` bits (unsigned, two's complement for signed data)."""
    width: int
    words: list[int]

    @property
    def depth(self) -> int:
        return len(self.words)

    @property
    def bits(self) -> int:
        return self.width * self.depth


@dataclass
class PackedLayer:
    """A layer's compressed weights: scheme name, JSON-serialisable meta and named ROMs."""
    scheme: str
    meta: dict
    roms: dict[str, Rom] = field(default_factory=dict)

    @property
    def rom_bits(self) -> int:
        return sum(rom.bits for rom in self.roms.values())


class Scheme:
    """Base class; subclasses set ``name``, ``summary``, ``options`` and override what differs."""
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, **opts):
        unknown = set(opts) - set(self.options)
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise SparsynError(f"scheme '{self.name}' has no option {sorted(unknown)[0]!r}; its options are: {known}")
        self.opts = {}
        for key, opt in self.options.items():
            value = opts.get(key, opt.default)
            if key in opts:
                try:
                    value = opt.type(value)
                except (TypeError, ValueError):
                    raise SparsynError(f"option {key}={opts[key]!r} of scheme '{self.name}' is not a valid "
                                       f"{opt.type.__name__}; {opt.help}") from None
            if opt.check is not None:
                problem = opt.check(value)
                if problem:
                    raise SparsynError(f"option {key}={value!r} of scheme '{self.name}': {problem}")
            self.opts[key] = value

    # ---- software compression -------------------------------------------------------------
    def applies_to(self, index: int, layer_kind: str, n_layers: int) -> bool:
        """Whether this scheme compresses compute layer ``index``; other layers are stored dense int8."""
        return True

    def prepare(self, model, data, log=print):
        """Prune / fine-tune the float ``torch.nn.Module`` in place and return it (default: unchanged)."""
        return model

    def quantize_weights(self, index: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Float N x K -> (int64 N x K, float per-channel scale N, weight bits). Default: symmetric int8."""
        return quantize_int8_per_channel(w)

    # ---- ROM format -----------------------------------------------------------------------------
    def pack(self, layer: QuantLayer) -> PackedLayer:
        raise NotImplementedError

    @classmethod
    def decode(cls, packed: PackedLayer) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def stats(cls, packed: PackedLayer, layer: QuantLayer) -> dict:
        """Size figures: dense slots, stored slots, ROM bits (weights + index/flag/bitmap bits)."""
        return {"dense_slots": layer.n * layer.k, "rom_bits": packed.rom_bits}

    # ---- hardware -------------------------------------------------------------------------------
    @classmethod
    def lanes(cls, packed: PackedLayer) -> int:
        """Activations per array row (L) this scheme's PE consumes."""
        return 1

    @classmethod
    def entry_layout(cls, packed: PackedLayer):
        """The PE entry as an ``amaranth.lib.data.StructLayout``."""
        raise NotImplementedError

    @classmethod
    def entry_coefficients(cls, packed: PackedLayer, entry: int) -> tuple[int, ...]:
        """The PE's linear map: the integer weight it applies to each of its L lanes."""
        raise NotImplementedError

    @classmethod
    def tile_program(cls, packed: PackedLayer, layer: QuantLayer, array: ArrayConfig) -> TileProgram:
        raise NotImplementedError


def quantize_int8_per_channel(w: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray, int]:
    """Symmetric per-output-channel quantization to ``[-(2**(bits-1)-1), 2**(bits-1)-1]``."""
    w = np.asarray(w, dtype=np.float64)
    qmax = (1 << (bits - 1)) - 1
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    w_int = np.clip(np.floor(w / scale[:, None] + 0.5), -qmax, qmax).astype(np.int64)
    return w_int, scale, bits


_REGISTRY: dict[str, type[Scheme]] = {}


def register(cls: type[Scheme]) -> type[Scheme]:
    """Class decorator adding a scheme to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def scheme_names() -> list[str]:
    from . import _load_all  # noqa: F401  (imports every scheme module once)
    return list(_REGISTRY)


def get_scheme(name: str) -> type[Scheme]:
    names = scheme_names()
    if name not in _REGISTRY:
        raise SparsynError(f"unknown scheme {name!r}; available schemes: {', '.join(names)}")
    return _REGISTRY[name]
