"""Argument checks of the dcsd package (the layers, models, data and engine).

One convention everywhere: a value of the wrong type raises ``TypeError`` and a value out of
range raises ``ValueError``, each naming the argument, what it must be and what it got. The op
library :mod:`dcsd.kernels` keeps checks of its own, so that it stays usable without dcsd.
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


def check_bool(name: str, value: object) -> bool:
    """``value``, after checking it is a bool.

    Raises:
        TypeError: ``value`` is not a bool (``0`` / ``1`` are refused: a flag is spelled out).
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value
