# Message validation for sends that never meet an encoder.
#
# A remote send is checked by the encoder itself; a local one is not encoded
# at all, so without this check a message that works locally would fail the
# day its receiver moves to another node ("local is not special"). The fast
# path costs one type lookup per top-level element (and an isascii() per
# str, for lone surrogates, which no encoder takes); only containers recurse.
# Errors show a value through wire's brief(), never its whole repr: the
# value may be a GiB, or an int whose repr Python refuses to make.

from __future__ import annotations

from typing import Any

from ._errors import MessageError
from .wire._decoding import brief
from .wire._framing import MAX_DEPTH

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_SCALARS = frozenset({float, bool, type(None), bytes, bytearray})


def check_message(msg: tuple[Any, ...]) -> None:
    """Raise MessageError unless msg is a non-empty sequence of plain data."""
    if not msg:
        raise MessageError("a message must have at least one element (by convention a tag)")
    for x in msg:
        t = type(x)
        if t is str:
            if x.isascii():
                continue
        elif t is int:
            if -0x8000000000000000 <= x <= 0xFFFFFFFFFFFFFFFF:
                continue
        elif t in _SCALARS:
            continue
        _check_value(x, 0)


def _check_value(x: Any, depth: int) -> None:
    if isinstance(x, str):
        if not x.isascii():
            _check_str(x)
        return
    if isinstance(x, bool | float | bytes | bytearray) or x is None:
        return
    if isinstance(x, int):
        if not _INT_MIN <= x <= _INT_MAX:
            raise MessageError(
                f"message element {brief(x, 60)} is out of range: integers must fit in 64 bits "
                f"({_INT_MIN} .. {_INT_MAX})"
            )
        return
    if depth + 1 >= MAX_DEPTH and isinstance(x, list | tuple | dict):
        # the same limit the wire encoders keep, so local and remote agree
        raise MessageError(f"message is nested more than {MAX_DEPTH} levels deep")
    if isinstance(x, list | tuple):
        for y in x:
            _check_value(y, depth + 1)
        return
    if isinstance(x, dict):
        for k, v in x.items():
            if not isinstance(k, str):
                raise MessageError(
                    f"message dict key {brief(k, 60)} is a {type(k).__name__}: "
                    "dict keys must be str"
                )
            if not k.isascii():
                _check_str(k)
            _check_value(v, depth + 1)
        return
    raise MessageError(
        f"message element {brief(x, 60)} is a {type(x).__name__}: messages hold only None, "
        "bool, int, float, str, bytes (or bytearray), list and dict with str keys"
    )


def _check_str(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MessageError(
            f"message string {s[:40]!r} holds a lone surrogate at index {e.start}: "
            "only valid Unicode can be sent (decode bytes with errors='replace', or send bytes)"
        ) from None
