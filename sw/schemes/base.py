"""The scheme spec: every compression scheme is one subclass of :class:`Scheme`, in one module.

A scheme is a small family of files behind this one spec and one line of the registry
(:data:`sparsyn.sw.schemes.REGISTRY`):

* ``sw/schemes/<name>.py`` — the :class:`Scheme` subclass:

  - **options** (:attr:`Scheme.options`, typed and checked; ``--opt K=V`` on the command line);
  - **compressor** — :meth:`Scheme.prepare` prunes / fine-tunes the float model, and
    :meth:`Scheme.quantize_weights` turns a float N x K matrix into integers plus a per-channel scale;
  - **ROM format** — :meth:`Scheme.pack` (integer layer -> :class:`PackedLayer` whose ROMs are the
    memory images of the layer's hardware, each with its kind: weights / index / table / constants)
    and :meth:`Scheme.decode` (those ROMs -> the exact N x K integer matrix the golden model uses).
    Schemes on the shared array (:attr:`Scheme.engine` ``"array"``) only supply their schedule
    (:meth:`Scheme.schedule`) and their PE model (:meth:`Scheme.entry_layout`,
    :meth:`Scheme.entry_coefficients`); :mod:`..array_format` lays out and decodes the ROMs;
  - **hardware** — :attr:`Scheme.hardware`, the *name* of the module holding its hardware spec (so
    that ``sw/`` never imports ``hw/``);

* ``hw/schemes/<name>.py`` — ``HARDWARE = SchemeHardware(product=..., engine=..., ...)``: the PE
  datapath factory (it receives the packed layer and its array position), the engine the scheme
  runs on (default: the shared :class:`~sparsyn.hw.engine.LayerEngine`, with its cycle model).

The array geometry (:class:`~..schedule.ArrayConfig`) is part of the compressed artefact: a scheme
object is made for one array (``Scheme(array=..., **options)``) and packs for it.
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


def parse_layer_ints(value, *, scheme: str, option: str, what: str, example: str) -> dict[str, int]:
    """A per-layer integer option: ``"conv2=8,fc=1"`` (or a dict) -> ``{"conv2": 8, "fc": 1}``; malformed
    text, a layer named twice or a non-integer value is refused in one line naming ``option`` and
    ``what`` (e.g. ``alpha``), with ``example`` as the fix."""
    if isinstance(value, dict):
        items = list(value.items())
    else:
        text = str(value).strip()
        items = []
        for part in (text.split(",") if text else []):
            name, sep, v = part.partition("=")
            if not sep or not name.strip() or not v.strip():
                raise SparsynError(f"option {option}={text!r} of scheme '{scheme}': {part.strip()!r} is not "
                                   f"NAME={what.upper()}; give comma-separated layer={what} pairs, e.g. {example}")
            items.append((name.strip(), v.strip()))
    out = {}
    for name, v in items:
        if name in out:
            raise SparsynError(f"option {option} of scheme '{scheme}' names layer {name!r} twice; give each layer once")
        try:
            out[str(name)] = int(v)
        except (TypeError, ValueError):
            raise SparsynError(f"option {option} of scheme '{scheme}': {what} {v!r} of layer {name!r} is not an "
                               f"integer; e.g. {example}") from None
    return out


#: What a ROM can hold, as the manifest and the size reports split it.
ROM_KINDS = ("weights", "index", "table", "constants")


@dataclass
class Rom:
    """One memory image: ``depth`` words of ``width`` bits (unsigned, two's complement for signed data).

    ``kind`` says what it holds: ``weights`` (PE entries), ``index`` (where the weights go: lane
    descriptors, ids, bitmaps), ``table`` (schedule or pattern tables), ``constants`` (bias,
    requantization)."""
    width: int
    words: list[int]
    kind: str = "weights"

    def __post_init__(self):
        if self.kind not in ROM_KINDS:
            raise ValueError(f"ROM kind {self.kind!r} is not one of {ROM_KINDS}")

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
        """Every bit the layer's hardware stores (all ROMs)."""
        return sum(rom.bits for rom in self.roms.values())

    def bits_by_kind(self) -> dict[str, int]:
        """ROM bits per kind (weights / index / table / constants), every kind present (0 if none)."""
        out = dict.fromkeys(ROM_KINDS, 0)
        for rom in self.roms.values():
            out[rom.kind] += rom.bits
        return out

    @property
    def array(self) -> ArrayConfig | None:
        """The array geometry the layer was packed for (None for an engine without one)."""
        a = self.meta.get("array")
        return ArrayConfig(a["rows"], a["cols"], a.get("lanes", 1)) if a else None


class Scheme:
    """Base class; subclasses set ``name``, ``summary``, ``options``, ``hardware`` and override what differs."""
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    #: Module that defines this scheme's ``HARDWARE`` spec (imported by the hardware layer only).
    hardware: ClassVar[str] = ""
    #: The ROM format family: ``"array"`` = the shared array's memories (:mod:`..array_format`); a scheme with its
    #: own engine names its own (``"permdiag"``) and overrides ``pack`` / ``decode`` / ``decode_constants``.
    engine: ClassVar[str] = "array"

    def __init__(self, array: ArrayConfig | None = None, **opts):
        if array is None:
            array = DEFAULT_ARRAY
        if not isinstance(array, ArrayConfig):
            array = ArrayConfig.parse(str(array))
        #: The array this scheme object packs for (``sparsyn compress --array``).
        self.array = ArrayConfig(array.rows, array.cols)
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
    def applies_to(self, index: int, layer_kind: str, n_layers: int, kernel=(1, 1)) -> bool:
        """Whether this scheme compresses compute layer ``index`` (of ``n_layers``; its kind and (kh, kw)
        ``kernel``, (1, 1) for Linear); other layers are stored dense int8."""
        return True

    def prepare(self, model, data, log=print):
        """Prune / fine-tune the float ``torch.nn.Module`` in place and return it (default: unchanged)."""
        return model

    def quantize_weights(self, index: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Float N x K -> (int64 N x K, float per-channel scale N, weight bits). Default: symmetric int8."""
        return quantize_int8_per_channel(w)

    # ---- ROM format -----------------------------------------------------------------------------
    def schedule(self, layer: QuantLayer) -> tuple[TileProgram, dict]:
        """The layer on this scheme's array: (TileProgram, scheme meta read by ``entry_layout`` /
        ``entry_coefficients``; a ``"stats"`` entry holds scheme-specific size figures)."""
        raise NotImplementedError

    def pack(self, layer: QuantLayer) -> PackedLayer:
        """Integer layer -> its memory images (default: the shared array's format of :meth:`schedule`)."""
        from ..array_format import pack_array
        program, meta = self.schedule(layer)
        return pack_array(self.name, layer, program, self.entry_layout(PackedLayer(self.name, meta)), meta)

    @classmethod
    def decode(cls, packed: PackedLayer) -> np.ndarray:
        """Memory images -> the exact N x K integer weights (default: the shared array's format)."""
        from ..array_format import decode_array
        return decode_array(packed, cls.entry_layout(packed), lambda words: cls.coefficients(packed, words))

    @classmethod
    def decode_constants(cls, packed: PackedLayer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Memory images -> (bias, mult, shift) per output channel."""
        from ..array_format import decode_constants
        return decode_constants(packed, cls.entry_layout(packed))

    @classmethod
    def stats(cls, packed: PackedLayer, layer: QuantLayer) -> dict:
        """Size figures: the scheme's own (``meta["stats"]``) and the stored bits by kind."""
        return {"dense_slots": layer.n * layer.k, **packed.meta.get("stats", {}), "rom_bits": packed.rom_bits}

    # ---- PE model -------------------------------------------------------------------------------
    @classmethod
    def lanes(cls, packed: PackedLayer) -> int:
        """Activations per array row (L) this scheme's PE consumes."""
        return 1

    @classmethod
    def pe_macs(cls, packed: PackedLayer) -> int:
        """Multiply-accumulates (or adds) one PE does per cycle: its lanes, unless it selects fewer of them."""
        return cls.lanes(packed)

    @classmethod
    def pe_phases(cls, packed: PackedLayer) -> int:
        """Cycles the PE holds each activation vector (a time-multiplexed datapath; default 1)."""
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
    def coefficients(cls, packed: PackedLayer, words) -> np.ndarray:
        """:meth:`entry_coefficients` of many entries (Python ints of any width): (len(words), L) int64."""
        cache: dict[int, tuple[int, ...]] = {}
        out = np.zeros((len(words), cls.lanes(packed)), dtype=np.int64)
        for i, w in enumerate(words):
            w = int(w)
            if w not in cache:
                cache[w] = cls.entry_coefficients(packed, w)
            out[i] = cache[w]
        return out


def quantize_int8_per_channel(w: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray, int]:
    """Symmetric per-output-channel quantization to ``[-(2**(bits-1)-1), 2**(bits-1)-1]``."""
    w = np.asarray(w, dtype=np.float64)
    qmax = (1 << (bits - 1)) - 1
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    w_int = np.clip(np.floor(w / scale[:, None] + 0.5), -qmax, qmax).astype(np.int64)
    return w_int, scale, bits


#: The array ``sparsyn compress`` packs for when ``--array`` is not given.
DEFAULT_ARRAY = ArrayConfig(4, 4)
