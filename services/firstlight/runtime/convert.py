"""Conversions shared by the servicers and the peers (proto ⇄ Python values)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from firstlight.errors import InvalidArgument
from firstlight.v1 import common_pb2


def timestamp(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


# The tri-state labeled filter: None = either, True = labeled only, False = unlabeled only.
_LABELED_OF = {
    common_pb2.LABELED_FILTER_UNSPECIFIED: None,
    common_pb2.LABELED_FILTER_LABELED: True,
    common_pb2.LABELED_FILTER_UNLABELED: False,
}
_LABELED_PROTO = {v: k for k, v in _LABELED_OF.items()}


def labeled_of(value: int, field: str = "filter.labeled") -> bool | None:
    """The domain's tri-state of a request's ``LabeledFilter``. Strict in every service: an unknown
    value (a newer client's, or garbage) is INVALID_ARGUMENT, never silently "either" (which would
    widen a selection the caller meant to narrow)."""
    if value not in _LABELED_OF:
        raise InvalidArgument(f"{field}: unknown LabeledFilter value {value}")
    return _LABELED_OF[common_pb2.LabeledFilter.ValueType(value)]


def labeled_proto(labeled: bool | None) -> common_pb2.LabeledFilter.ValueType:
    """The reverse of ``labeled_of`` (for the peers that send a filter)."""
    return _LABELED_PROTO[labeled]
