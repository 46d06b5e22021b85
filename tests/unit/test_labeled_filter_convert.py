"""The one converter of the tri-state ``LabeledFilter`` (firstlight.runtime.convert), strict in
every service, and the services that use it."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from firstlight.errors import InvalidArgument
from firstlight.runtime.convert import labeled_of, labeled_proto
from firstlight.v1 import common_pb2


def test_each_known_value_round_trips() -> None:
    for value, domain in (
        (common_pb2.LABELED_FILTER_UNSPECIFIED, None),
        (common_pb2.LABELED_FILTER_LABELED, True),
        (common_pb2.LABELED_FILTER_UNLABELED, False),
    ):
        assert labeled_of(value) is domain
        assert labeled_proto(domain) == value


@pytest.mark.parametrize("value", [3, 7, -1])
def test_an_unknown_value_is_invalid_argument_naming_the_field_and_value(value: int) -> None:
    with pytest.raises(InvalidArgument, match=rf"^filter\.labeled: unknown LabeledFilter value {value}$"):
        labeled_of(value)
    with pytest.raises(InvalidArgument, match=r"^selection\.filter\.labeled: "):
        labeled_of(value, "selection.filter.labeled")


def test_curation_is_strict_too_no_longer_reading_unknown_as_either() -> None:
    from firstlight.curation.servicer import _label_filter

    bad = common_pb2.InputFilter(labeled=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"filter\.labeled: unknown LabeledFilter value 5"):
        _label_filter(bad)
    assert _label_filter(common_pb2.InputFilter(labeled=common_pb2.LABELED_FILTER_LABELED)).labeled is True


class _Aborted(Exception):
    pass


class _Context:
    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise _Aborted(code, message)


def test_training_list_dataset_rows_answers_invalid_argument_for_an_unknown_value() -> None:
    from firstlight.training.servicer import TrainingServicer
    from firstlight.v1 import training_pb2

    servicer: Any = TrainingServicer.__new__(TrainingServicer)  # the filter is converted before the core is reached
    req = training_pb2.ListDatasetRowsRequest(app_id="a", dataset_id="d", filter=common_pb2.InputFilter(labeled=4))  # type: ignore[arg-type]
    with pytest.raises(_Aborted) as got:
        asyncio.run(servicer.ListDatasetRows(req, _Context()))
    assert got.value.args == (grpc.StatusCode.INVALID_ARGUMENT, "filter.labeled: unknown LabeledFilter value 4")
