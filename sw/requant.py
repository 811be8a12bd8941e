"""Integer requantization: the one definition of how a wide accumulator becomes an int8 activation.

Numeric contract (shared by the golden model, the ROM decoder and the RTL)::

    y = clamp((acc * mult + 2**(shift-1)) >> shift, lo, hi)

* ``acc``   signed accumulator (int32 range), ``mult`` unsigned, ``0 <= mult < 2**MULT_BITS``;
* ``>>`` is an arithmetic (flooring) shift, so ``+ 2**(shift-1)`` makes it round-half-up
  (ties go towards +infinity);
* ``lo, hi = (0, 127)`` when a ReLU is fused, else ``(-128, 127)``.

``mult``/``shift`` are chosen per output channel so that ``mult * 2**-shift`` approximates the
real rescale ``s_in * s_w / s_out`` with ``mult`` normalised into ``[2**(MULT_BITS-1), 2**MULT_BITS)``.
"""
import math

import numpy as np
import torch

from .errors import SparsynError

#: Width of the unsigned requantization multiplier (fits an iCE40 SB_MAC16 / ECP5 MULT18 input).
MULT_BITS = 15
#: Largest right shift the hardware implements.
MAX_SHIFT = 47
#: Accumulator width in the hardware and the range the golden model checks.
ACC_BITS = 32

ACT_MIN, ACT_MAX = -128, 127


def clamp_range(relu: bool) -> tuple[int, int]:
    """Output range of a requantized activation: ReLU is fused as the lower clamp."""
    return (0, ACT_MAX) if relu else (ACT_MIN, ACT_MAX)


def choose_multiplier(real: float) -> tuple[int, int]:
    """Integer ``(mult, shift)`` with ``mult * 2**-shift ~= real`` (``real > 0``)."""
    if not (real > 0 and math.isfinite(real)):
        raise SparsynError(f"requantization scale {real!r} is not a positive finite number; "
                           "check the layer's weights and calibration data")
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2**exponent, mantissa in [0.5, 1)
    mult = int(round(mantissa * (1 << MULT_BITS)))
    shift = MULT_BITS - exponent
    if mult == (1 << MULT_BITS):
        mult >>= 1
        shift -= 1
    while shift > MAX_SHIFT:            # tiny scale: lose precision rather than overflow the shifter
        mult = (mult + 1) >> 1
        shift -= 1
    if shift < 1:
        raise SparsynError(f"requantization scale {real:.3g} is too large for a {MULT_BITS}-bit multiplier "
                           "(output scale far smaller than input scale); recalibrate the model")
    return mult, shift


def requantize(acc: torch.Tensor, mult, shift, relu: bool, channel_dim: int = 1) -> torch.Tensor:
    """Apply the contract to an int64 accumulator tensor; ``mult``/``shift`` are per channel."""
    if acc.dtype != torch.int64:
        raise TypeError("requantize needs an int64 accumulator")
    shape = [1] * acc.dim()
    shape[channel_dim] = -1
    mult = torch.as_tensor(np.asarray(mult, dtype=np.int64)).view(shape)
    shift = torch.as_tensor(np.asarray(shift, dtype=np.int64)).view(shape)
    rounding = torch.bitwise_left_shift(torch.ones_like(shift), shift - 1)
    y = torch.bitwise_right_shift(acc * mult + rounding, shift)
    lo, hi = clamp_range(relu)
    return y.clamp(lo, hi)


def requantize_int(acc: int, mult: int, shift: int, relu: bool) -> int:
    """Scalar form of :func:`requantize` (for benches and documentation)."""
    lo, hi = clamp_range(relu)
    return max(lo, min(hi, (acc * mult + (1 << (shift - 1))) >> shift))
