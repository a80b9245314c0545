"""Argument checks of the op library.

The convention of :mod:`dcsd.validation`: a value of the wrong type raises ``TypeError`` and a
value out of range raises ``ValueError``, each naming the argument, what it must be and what it
got. The op library keeps its own copy of ``check_int`` (the one check it needs) so that it
stays usable without dcsd; dcsd's modules use :mod:`dcsd.validation`.
"""

from __future__ import annotations

from numbers import Integral


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int, after checking it is an integer (not a bool) ``>= minimum``.

    NumPy integers are accepted (they come out of configs and arrays) and returned as int.

    Raises:
        TypeError: ``value`` is not an integer, e.g. ``None``, ``3.0`` or ``True``.
        ValueError: ``value < minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
