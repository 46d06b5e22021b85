"""The gallery filtered by a dataset version (issue 16): ingestion's ListInputs narrowed to a
page's ids (the pages of the version's rows: test_dataset_rows_pages)."""

from __future__ import annotations

from pathlib import Path

import pytest
from made_images import png

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.errors import InvalidArgument
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.store import MetadataStore, make_engine


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
