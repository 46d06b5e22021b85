"""firstlight.messaging.wire: the packed float field read from serialized bytes must equal what
protobuf's own parser reads, for every way the field can be encoded."""

from __future__ import annotations

import numpy as np
import pytest

from firstlight.messaging import wire
from firstlight.messaging.bus import ParsedRecord, new_header
from firstlight.search.indexer import _VECTOR_FIELD, _vector_of
from firstlight.v1 import events_pb2


def event(vector: list[float], **kw: object) -> events_pb2.EmbeddingComputed:
    return events_pb2.EmbeddingComputed(header=new_header("t", "k"), app_id="app", input_id="in", model="m", vector=vector, concepts=["a", "b"], **kw)


def test_matches_the_parser_on_a_full_event() -> None:
    v = np.random.default_rng(0).standard_normal(1280).astype(np.float32)
    raw = event(v.tolist(), split=2, label_revision=7).SerializeToString()
    got = wire.packed_floats(raw, _VECTOR_FIELD)
    assert got is not None and got.dtype == np.float32 and got.shape == (1280,)
    np.testing.assert_array_equal(got, np.asarray(events_pb2.EmbeddingComputed.FromString(raw).vector, np.float32))
    np.testing.assert_array_equal(got, v)


def test_absent_field_and_other_fields_only() -> None:
    assert wire.packed_floats(event([]).SerializeToString(), _VECTOR_FIELD) is None
    assert wire.packed_floats(b"", _VECTOR_FIELD) is None


def test_repeated_occurrences_concatenate_like_the_parser() -> None:
    a = event([1.0, 2.0]).SerializeToString()
    b = events_pb2.EmbeddingComputed(vector=[3.0]).SerializeToString()
    raw = a + b  # concatenated messages merge; repeated fields append
    np.testing.assert_array_equal(wire.packed_floats(raw, _VECTOR_FIELD), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(wire.packed_floats(raw, _VECTOR_FIELD), events_pb2.EmbeddingComputed.FromString(raw).vector)


def test_unpacked_encoding_falls_back_to_the_parser() -> None:
    # field 5, wire type 5 (fixed32): the legal unpacked form of a repeated float
    raw = bytes([(_VECTOR_FIELD << 3) | 5]) + np.float32(1.5).tobytes()
    assert wire.packed_floats(raw, _VECTOR_FIELD) is None
    record = ParsedRecord(None, events_pb2.EmbeddingComputed.FromString(raw), "t", 0, 0, {}, raw)
    np.testing.assert_array_equal(_vector_of(record), [1.5])


@pytest.mark.parametrize("raw", [b"\x2a\x05\x00\x00\x00\x00", b"\x2a\x08\x00", b"\x80", b"\x0f"])
def test_malformed_bytes_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        wire.packed_floats(raw, _VECTOR_FIELD)


def test_indexer_reads_the_parsed_field_without_raw_bytes() -> None:
    msg = event([0.5, 0.25])
    np.testing.assert_array_equal(_vector_of(ParsedRecord(None, msg, "t", 0, 0)), [0.5, 0.25])
