"""The sequenced engine's per-layer descriptor table: a ROM file of the manifest the sequencer and the shared
datapath read their per-layer values from.

When one datapath runs every layer in turn (:mod:`.sequenced_engine`), each component has values that differ
from layer to layer: image and output geometry, stride and padding, element counts, steps and passes, the
first word of each layer's ROMs in the shared memories, which engine and which pool units a layer uses.
Every such value is a **field** of the descriptor table: one word per compute layer of the model (a *step*),
each field at a fixed bit offset. A value that is the same for every layer stays a constant of the logic and
is not in the table.

The table is one memory initialised from the manifest's ``descriptor.hex`` (``kind: table``, its bits count in
the model's stored bits); each component that selects per-layer values reads it through an asynchronous read
port at the step of the layer it is working on (the component's layer index mapped to the step). Read
asynchronously, the memory is built from LUTs (it is a few words of a few hundred bits); its ``ram_style``
attribute keeps yosys from putting it into distributed RAM.

Which values are fields is decided by the datapath itself: :func:`record_descriptor` elaborates the
sequenced engine once with a recording scope, in which every :class:`~sparsyn.hw.per_layer.LayerSelect`
registers its per-layer values under ``<component>.<name>`` (``#k`` tells apart the k-th instance of a
component class, in elaboration order). A build then elaborates with the table in read mode: every selection
must find its field with exactly the values it needs, so a table that does not belong to the design is refused.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass

from amaranth.hdl import Const, Shape, signed, unsigned

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.schemes import Rom

@dataclass(frozen=True)
class DescriptorField:
    """One per-layer value: ``width`` bits at ``offset`` of every word, two's complement when ``signed``."""
    name: str
    offset: int
    width: int
    signed: bool

    @property
    def shape(self) -> Shape:
        return signed(self.width) if self.signed else unsigned(self.width)

    def encode(self, value: int) -> int:
        return (int(value) & ((1 << self.width) - 1)) << self.offset

    def decode(self, word: int) -> int:
        v = (int(word) >> self.offset) & ((1 << self.width) - 1)
        return v - (1 << self.width) if self.signed and v >> (self.width - 1) else v


@dataclass
class DescriptorTable:
    """The table: ``steps`` (the compute layers' names, one word each, in order), ``fields`` and ``words``."""
    steps: list[str]
    fields: list[DescriptorField]
    words: list[int]

    @property
    def width(self) -> int:
        return max((f.offset + f.width for f in self.fields), default=0)

    @property
    def bits(self) -> int:
        """Bits the chip stores for the table."""
        return self.width * len(self.words) if self.fields else 0

    def field(self, name: str) -> DescriptorField | None:
        return next((f for f in self.fields if f.name == name), None)

    def values(self, name: str) -> list[int]:
        f = self.field(name)
        return [f.decode(w) for w in self.words]

    def rom(self) -> Rom:
        """The table as a ROM (``kind: table``), word for word what the chip holds."""
        return Rom(max(self.width, 1), list(self.words), "table")

    def meta(self) -> dict:
        """The layout recorded beside the file in the manifest."""
        return {"steps": list(self.steps),
                "fields": [[f.name, f.offset, f.width, f.signed] for f in self.fields]}

    @classmethod
    def from_rom(cls, rom: Rom, meta: dict) -> "DescriptorTable":
        try:
            fields = [DescriptorField(str(n), int(o), int(w), bool(s)) for n, o, w, s in meta["fields"]]
            steps = [str(s) for s in meta["steps"]]
        except (KeyError, TypeError, ValueError):
            raise SparsynError("the manifest's descriptor record lacks its steps / fields layout; "
                               "re-run 'sparsyn compress'") from None
        if len(rom.words) != len(steps):
            raise SparsynError(f"the descriptor table has {len(rom.words)} words for {len(steps)} layers; "
                               "re-run 'sparsyn compress'")
        return cls(steps, fields, list(rom.words))

    def first_difference(self, other: "DescriptorTable") -> str | None:
        """Where ``self`` (e.g. the manifest's table) differs from ``other`` (the design's), in words; None if equal."""
        if self.steps != other.steps:
            return f"its layers are {self.steps}, the design runs {other.steps}"
        mine, theirs = {f.name: f for f in self.fields}, {f.name: f for f in other.fields}
        for name in theirs:
            if name not in mine:
                return f"it lacks the field {name}"
        for name in mine:
            if name not in theirs:
                return f"it has a field {name} the design does not read"
        for name, f in theirs.items():
            g = mine[name]
            if (g.width, g.signed) != (f.width, f.signed):
                return f"field {name} is {g.width} bits wide, the design's {f.width}"
            for step, a, b in zip(self.steps, self.values(name), other.values(name)):
                if a != b:
                    return f"field {name} of layer {step} is {a}, the design needs {b}"
        if self.fields != other.fields:
            return "its fields sit at other bit offsets than the design's"
        return None


# ---- the scope a sequenced engine's datapath is elaborated in ------------------------------------------------

_scope: contextvars.ContextVar["DescriptorScope | None"] = contextvars.ContextVar("sparsyn_descriptor", default=None)


def current_scope() -> "DescriptorScope | None":
    return _scope.get()


@contextmanager
def descriptor_scope(scope: "DescriptorScope"):
    """Selections of per-layer values inside the ``with`` block go through ``scope``."""
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


class DescriptorScope:
    """The per-layer selections of one elaboration of a sequenced engine.

    Parameters
    ----------
    steps : the compute layers' names, in order (the table's words).
    table : DescriptorTable or None — ``None``: record every selection (:func:`record_descriptor`).
    memory : the table's Memory (read mode), whose read ports the selections add.
    aliases : other names of a step (a max-pool layer: the step of the compute layer it follows).
    """

    def __init__(self, steps, table: DescriptorTable | None = None, memory=None, aliases: dict | None = None):
        self.steps = list(steps)
        self.aliases = dict(aliases or {})
        self.table, self.memory = table, memory
        self.recorded: dict[str, tuple[Shape, list[int]]] = {}
        self._instances: dict[str, int] = {}
        self.used: set[str] = set()

    def owner_key(self, owner) -> str:
        """``Class`` for the first instance of a component class in this elaboration, ``Class#k`` for the k-th."""
        cls = type(owner).__name__ if not isinstance(owner, str) else owner
        k = self._instances.get(cls, 0)
        self._instances[cls] = k + 1
        return cls if k == 0 else f"{cls}#{k}"

    def step_of(self, name: str) -> int:
        if name in self.aliases:
            return self.aliases[name]
        try:
            return self.steps.index(name)
        except ValueError:
            raise ValueError(f"layer {name!r} is not one of the sequence's layers {self.steps}") from None

    def per_step(self, names, values) -> list[int]:
        """Values per step: the given layers' values at their steps, 0 at the others."""
        out = [0] * len(self.steps)
        for name, v in zip(names, values):
            out[self.step_of(name)] = int(v)
        return out

    def record(self, key: str, shape: Shape, names, values) -> None:
        if key in self.recorded:
            raise ValueError(f"per-layer value {key} selected twice")
        self.recorded[key] = (shape, self.per_step(names, values))

    def read(self, key: str, shape: Shape, names, values, port) -> Const:
        """The field ``key`` from the read port's word, after checking the table holds exactly ``values``."""
        f = self.table.field(key)
        if f is None:
            raise SparsynError(f"the descriptor table has no field {key}; it was written for another design, "
                               "re-run 'sparsyn compress'")
        have = self.table.values(key)
        for name, v in zip(names, values):
            if have[self.step_of(name)] != int(v):
                raise SparsynError(f"the descriptor table's field {key} of layer {name} is "
                                   f"{have[self.step_of(name)]}, the design needs {int(v)}; re-run 'sparsyn compress'")
        if (f.width, f.signed) != (shape.width, shape.signed):
            raise SparsynError(f"the descriptor table's field {key} is {f.width} bits, the design's {shape.width}; "
                               "re-run 'sparsyn compress'")
        self.used.add(key)
        bits = port.data[f.offset:f.offset + f.width]
        return bits.as_signed() if f.signed else bits

    def recorded_table(self) -> DescriptorTable:
        """The recorded selections as a table (fields in the order they were selected)."""
        fields, words, at = [], [0] * len(self.steps), 0
        for key, (shape, values) in self.recorded.items():
            f = DescriptorField(key, at, shape.width, shape.signed)
            fields.append(f)
            at += shape.width
            for i, v in enumerate(values):
                words[i] |= f.encode(v)
        return DescriptorTable(list(self.steps), fields, words)


def descriptor_memory(table: DescriptorTable):
    """The table's memory: word for word the ROM file, read asynchronously (LUT logic, not distributed RAM)."""
    from amaranth.lib.memory import Memory
    return Memory(shape=unsigned(max(table.width, 1)), depth=max(len(table.words), 2), init=table.words,
                  attrs={"ram_style": "logic"})


def record_descriptor(plan) -> DescriptorTable:
    """The descriptor table of a :class:`~sparsyn.hw.sequenced_engine.SequencedPlan`: every per-layer value its
    sequencer and shared datapath select, recorded by elaborating the engine once."""
    from amaranth.hdl import Fragment

    from .sequenced_engine import SequencedEngine
    scope = DescriptorScope(plan.steps, aliases=plan.step_aliases)
    Fragment.get(SequencedEngine(plan, record=scope), None)
    return scope.recorded_table()


def manifest_descriptor(model, packed: dict, array) -> DescriptorTable | None:
    """The descriptor table ``sparsyn compress`` writes into the manifest: the sequenced engine's, for the
    manifest's array; None when the model does not run on one shared datapath (a board then builds the per-layer
    ModelEngine) or has no per-layer value that differs between its layers."""
    from .sequenced_engine import plan_sequenced
    try:
        plan = plan_sequenced(model, packed, array)
    except SparsynError:
        return None
    return plan.descriptor if plan.descriptor.fields else None


def load_table(manifest, doc: dict | None = None) -> DescriptorTable | None:
    """The manifest's descriptor table, or None when it has none."""
    from sparsyn.sw.manifest import load_descriptor
    found = load_descriptor(manifest, doc)
    return DescriptorTable.from_rom(*found) if found is not None else None
