"""Multiplication by a constant as shifted adds, so that synthesis never spends a DSP block on it.

yosys maps every ``$mul`` cell of sufficient width to a DSP block (iCE40 ``SB_MAC16``, ECP5 ``MULT18X18D``) whether
or not one operand is a constant, and the DSP policy of ``sparsyn build`` (``--dsp auto``) can only put all of a
design's multipliers in DSPs or none. The address arithmetic (``channel * H*W + y * W + x``) multiplies by layer
constants: written with :func:`times_constant` it is a few adders, and the DSPs stay for the products that vary.
"""
from __future__ import annotations

import operator

from amaranth.hdl import Const, Value


def csd_digits(k: int) -> list[tuple[int, int]]:
    """``k`` (>= 0) in canonical signed-digit form: ``[(digit, shift), ...]`` with digits +1 / -1 and no two
    adjacent shifts, ``sum(d << s) == k`` (the fewest nonzero digits of any signed-digit form)."""
    k = operator.index(k)
    if k < 0:
        raise ValueError(f"times_constant takes a constant >= 0, not {k}")
    out, shift = [], 0
    while k:
        if k & 1:
            digit = 2 - (k & 3)                         # +1 when k = ...01, -1 when k = ...11
            out.append((digit, shift))
            k -= digit
        k >>= 1
        shift += 1
    return out


def times_constant(value, k: int) -> Value:
    """``value * k`` for a constant ``k >= 0``, as the sum of ``value`` shifted by the set digits of ``k``'s
    canonical signed-digit form (:func:`csd_digits`). The result is exact (Amaranth widens each add); a caller
    that knows the product's range truncates it, as with ``*``."""
    value = Value.cast(value)
    digits = csd_digits(k)
    if not digits:
        return Const(0, 1)
    total = None
    for digit, shift in digits:
        term = value << shift if shift else value
        if total is None:
            total = term if digit > 0 else -term
        else:
            total = total + term if digit > 0 else total - term
    return total
