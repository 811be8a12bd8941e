"""The activation feeders of the LayerEngine, one per row feed of the ROM format (``meta["feed"]``).

Every feeder has the same ports (``act_in``, ``busy``, ``clear``, ``lanes``, ``restart``, ``issue``,
``last``, ``pixel``, ``x``) and a ``latency`` from ``issue`` to ``x``; a pass takes :func:`feed_steps`
issue steps, of which ``layer.pixels`` emit an output pixel (``pixel``). A step may be held for several
cycles (a time-multiplexed PE): ``issue`` stays high and ``last`` marks its final cycle, in which the
scan advances and ``pixel`` / ``x.valid`` (``latency`` later) are raised; the read address, hence ``x``,
stays the same over the held cycles.

* ``lanes``    — :class:`~.activation.ActivationBuffer`: L arbitrary inputs per row (im2col, one
  buffer copy per lane); one step per output pixel;
* ``window``   — :class:`~.window_feeder.KernelWindowFeeder`: one channel's kh x kw window per row
  (row-banked image + window shift register); :func:`~.window_feeder.window_steps` steps per pass;
* ``channels`` — :class:`~.group_feeder.ChannelGroupFeeder`: L consecutive channels per row (1x1
  kernels; channel-banked image); one step per output pixel.
"""
from __future__ import annotations

from sparsyn.sw.qmodel import QuantLayer

from .activation import ActivationBuffer
from .group_feeder import ChannelGroupFeeder
from .window_feeder import KernelWindowFeeder, window_steps

#: row feed -> feeder component class.
FEEDERS = {"lanes": ActivationBuffer, "window": KernelWindowFeeder, "channels": ChannelGroupFeeder}


def feeder_class(feed: str):
    return FEEDERS[feed]


def feed_steps(feed: str, layer: QuantLayer) -> int:
    """Issue steps of one pass: Ho*Wo, or the window scan's :func:`window_steps`."""
    return window_steps(layer) if feed == "window" else layer.pixels
