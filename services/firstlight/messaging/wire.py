"""Reading one packed ``repeated float`` field straight from a serialized protobuf message.

Why: the indexer consumes thousands of ``EmbeddingComputed`` events a second, and turning a
parsed message's 1,280-float repeated field into numbers (``list(ev.vector)``) builds 1,280
Python floats per event: it was the largest single cost of indexing (profiled in bench/README.md).
The packed field's payload *is* little-endian float32, so numpy can view it without a copy.
Pure and unit-tested against protobuf's own encoder; callers fall back to the parsed field when
this returns None (field absent or not packed).
"""

from __future__ import annotations

import numpy as np

_FLOAT32_LE = np.dtype("<f4")


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def packed_floats(data: bytes, field_number: int) -> np.ndarray | None:
    """The values of packed repeated float field ``field_number`` of the top-level message
    ``data`` (read-only float32 view), or None when the field is absent or not packed.
    Raises ValueError on malformed bytes. Several occurrences of the field concatenate, as the
    protobuf spec says a parser must."""
    view = memoryview(data)
    pos, end = 0, len(view)
    parts: list[np.ndarray] = []
    while pos < end:
        key, pos = _varint(view, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(view, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            if number == field_number:
                return None  # an unpacked element: let the parser handle this rare encoding
            pos += 4
        elif wire == 2:
            length, pos = _varint(view, pos)
            if pos + length > end:
                raise ValueError("truncated length-delimited field")
            if number == field_number:
                if length % 4:
                    raise ValueError("packed float field length is not a multiple of 4")
                parts.append(np.frombuffer(view[pos : pos + length], dtype=_FLOAT32_LE))
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated field")
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
