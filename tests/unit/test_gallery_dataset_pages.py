"""The gallery filtered by a dataset version (issue 16): pages over a version's frozen rows with
a token that pins the version, and ingestion's ListInputs narrowed to a page's ids."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.errors import InvalidArgument
from firstlight.gateway.dataset_pages import FrozenRow, page, parse_token
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.store import MetadataStore, make_engine

ROWS = [FrozenRow(f"i{n:02d}", ("cat",) if n % 3 == 0 else ("dog",) if n % 3 == 1 else (), 1 + n % 3) for n in range(25)]


def walk(size: int, **filters) -> tuple[list[str], set[int]]:  # type: ignore[no-untyped-def]
    seen: list[str] = []
    totals: set[int] = set()
    token = ""
    while True:
        version, offset = parse_token(token, "ds")
        pg = page(ROWS, "ds", version or "v1", offset, size, **filters)
        seen += pg.input_ids
        totals.add(pg.total)
        if not pg.next_token:
            return seen, totals
        token = pg.next_token


@pytest.mark.parametrize("size", [1, 7, 25, 100])
def test_pages_cover_the_version_once_in_order(size: int) -> None:
    seen, totals = walk(size)
    assert seen == [r.input_id for r in ROWS] and totals == {25}


def test_filters_apply_to_the_frozen_rows() -> None:
    cats, totals = walk(4, concepts=["cat"])
    assert cats == [r.input_id for r in ROWS if r.concepts == ("cat",)] and totals == {9}
    assert walk(4, labeled=False)[0] == [r.input_id for r in ROWS if not r.concepts]
    assert walk(4, split=2, labeled=True)[0] == [r.input_id for r in ROWS if r.split == 2 and r.concepts]


def test_token_pins_the_version_and_the_dataset() -> None:
    pg = page(ROWS, "ds", "abc123", 0, 10)
    assert pg.next_token == "dv1:ds:abc123:10" and parse_token(pg.next_token, "ds") == ("abc123", 10)
    for bad in ("dv1:other:abc123:10", "dv1:ds:abc123:-1", "dv1:ds::10", "s:12", "dv1:ds:a/b:1"):
        with pytest.raises(InvalidArgument):
            parse_token(bad, "ds")
    assert page(ROWS, "ds", "v", 30, 10).input_ids == []


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_list_inputs_narrowed_to_a_page_of_ids(tmp_path: Path) -> None:
    core = Ingestion(MetadataStore(make_engine(f"sqlite:///{tmp_path / 'm.db'}")), LocalBlobStore(tmp_path / "b"), ImageLimits())
    core.create_app("app")
    core.create_app("other")
    core.post_inputs("app", [NewInput(png(n), id=f"i{n}") for n in range(5)])
    core.post_inputs("other", [NewInput(png(9), id="x")])
    rows, token, total = core.list_inputs("app", page_size=4, input_ids=["i3", "i1", "gone", "x"])
    assert sorted(r.id for r in rows) == ["i1", "i3"] and total == 2 and not token  # another app's id: not there
    with pytest.raises(InvalidArgument, match="at most the page size"):
        core.list_inputs("app", page_size=1, input_ids=["i1", "i2"])
    with pytest.raises(InvalidArgument):
        core.list_inputs("app", input_ids=["../x"])
