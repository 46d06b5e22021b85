"""ListDatasetRows paged in the store query (the gallery filtered by a dataset version): pages
cover the matching rows once in input-id order, the filters apply to the frozen rows (any of
the concepts, exact for any name; split; labeled), and the token pins the version and the filter
and is refused in another app, dataset or filter, or edited."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from training_doubles import training_core

from firstlight.errors import InvalidArgument, NotFound
from firstlight.training.core import RowFilter, TrainingCore
from firstlight.training.store import DatasetRow

QUOTED = 'a", "cat'  # a concept name that looks like two JSON elements
ROWS = [
    DatasetRow(f"i{n:02d}", ["cat"] if n % 3 == 0 else ["dog", QUOTED] if n % 3 == 1 else [], 1 + n % 3, None)
    for n in range(25)
]  # fmt: skip


@pytest.fixture
def core(tmp_path: Path):  # type: ignore[no-untyped-def]
    core = training_core(tmp_path, peers=None)  # type: ignore[arg-type]
    core.store.save_dataset("app", "ds", "v1", {}, ROWS)
    core.store.save_dataset("other", "ds", "v1", {}, ROWS)
    yield core
    core.shutdown()


ANY = RowFilter()


def walk(core: TrainingCore, size: int, flt: RowFilter = ANY, version: str = "") -> tuple[list[str], set[int], set[str]]:
    seen: list[str] = []
    totals: set[int] = set()
    versions: set[str] = set()
    token = ""
    while True:
        page = core.dataset_rows_page("app", "ds", version, size, token, flt)
        seen += [r.input_id for r in page.rows]
        totals.add(page.total)
        versions.add(page.version)
        if not page.next_token:
            return seen, totals, versions
        token = page.next_token


@pytest.mark.parametrize("size", [1, 7, 25, 1000])
def test_pages_cover_the_version_once_in_order(core: TrainingCore, size: int) -> None:
    assert walk(core, size) == ([r.input_id for r in ROWS], {25}, {"v1"})


def test_filters_apply_to_the_frozen_rows_in_the_query(core: TrainingCore) -> None:
    cats = [r.input_id for r in ROWS if r.concepts == ["cat"]]
    assert walk(core, 4, RowFilter(("cat",))) == (cats, {len(cats)}, {"v1"})
    assert walk(core, 4, RowFilter((QUOTED,)))[0] == [r.input_id for r in ROWS if QUOTED in r.concepts]
    assert walk(core, 4, RowFilter(("cat", "dog")))[0] == [r.input_id for r in ROWS if r.concepts]  # any of them
    assert walk(core, 4, RowFilter(labeled=False))[0] == [r.input_id for r in ROWS if not r.concepts]
    assert walk(core, 3, RowFilter(split=2, labeled=True))[0] == [r.input_id for r in ROWS if r.split == 2 and r.concepts]
    assert walk(core, 3, RowFilter(("cat",), split=2))[1] == {0}
    assert core.dataset_rows_page("app", "ds", "", 0, "", RowFilter(("dog",))).total == 8  # page size 0: all of them, no token


def test_the_token_pins_the_version_while_a_new_one_is_frozen(core: TrainingCore) -> None:
    first = core.dataset_rows_page("app", "ds", "", 10, "", RowFilter())
    core.store.save_dataset("app", "ds", "v2", {}, ROWS[:3])  # the latest now
    rest = core.dataset_rows_page("app", "ds", "", 10, first.next_token, RowFilter())
    assert (rest.version, rest.total, rest.rows[0].input_id) == ("v1", 25, "i10")
    assert core.dataset_rows_page("app", "ds", "v1", 10, first.next_token, RowFilter()).rows == rest.rows  # naming it is fine
    with pytest.raises(InvalidArgument, match="a page of dataset version 'v1', not 'v2'"):
        core.dataset_rows_page("app", "ds", "v2", 10, first.next_token, RowFilter())
    assert core.dataset_rows_page("app", "ds", "", 10, "", RowFilter()).total == 3


def test_a_token_works_only_in_its_own_listing(core: TrainingCore) -> None:
    token = core.dataset_rows_page("app", "ds", "", 5, "", RowFilter(("cat",))).next_token
    assert token.startswith("v1.")
    opaque = token.partition(".")[2]
    for app, flt, bad in (
        ("other", RowFilter(("cat",)), token),  # another app's listing
        ("app", RowFilter(("dog",)), token),  # another filter
        ("app", RowFilter(("cat",)), f"v2.{opaque}"),  # another version named
        ("app", RowFilter(("cat",)), opaque),  # no version
        ("app", RowFilter(("cat",)), token[:-2] + ("AA" if not token.endswith("AA") else "BB")),  # edited
    ):
        with pytest.raises(InvalidArgument):
            core.dataset_rows_page(app, "ds", "", 5, bad, flt)


def test_bad_requests_are_named(core: TrainingCore) -> None:
    with pytest.raises(InvalidArgument, match="over the maximum of 1000"):
        core.dataset_rows_page("app", "ds", "", 1001, "", RowFilter())
    with pytest.raises(InvalidArgument, match="unknown split 7"):
        core.dataset_rows_page("app", "ds", "", 10, "", RowFilter(split=7))
    with pytest.raises(InvalidArgument, match="concept name is empty"):
        core.dataset_rows_page("app", "ds", "", 10, "", RowFilter(("",)))
    with pytest.raises(NotFound, match="no version 'v9'"):
        core.dataset_rows_page("app", "ds", "v9", 10, "", RowFilter())
    with pytest.raises(NotFound, match="does not exist"):
        core.dataset_rows_page("app", "missing", "", 10, "", RowFilter())


def test_the_rpc_maps_the_filter_and_the_page(core: TrainingCore) -> None:
    from firstlight.training.servicer import TrainingServicer
    from firstlight.v1 import common_pb2, training_pb2

    servicer = TrainingServicer(core)
    flt = common_pb2.InputFilter(concepts=["cat"], labeled=common_pb2.LABELED_FILTER_LABELED)
    req = training_pb2.ListDatasetRowsRequest(app_id="app", dataset_id="ds", page_size=4, filter=flt)
    first = asyncio.run(servicer.ListDatasetRows(req, None))
    assert (first.version, first.total_size, [r.input_id for r in first.rows]) == ("v1", 9, ["i00", "i03", "i06", "i09"])
    req.page_token = first.next_page_token
    second = asyncio.run(servicer.ListDatasetRows(req, None))
    assert [r.input_id for r in second.rows] == ["i12", "i15", "i18", "i21"] and second.rows[0].split == common_pb2.SPLIT_TRAIN
    whole = asyncio.run(servicer.ListDatasetRows(training_pb2.ListDatasetRowsRequest(app_id="app", dataset_id="ds"), None))
    assert len(whole.rows) == whole.total_size == 25 and not whole.next_page_token  # page_size 0: as before paging
