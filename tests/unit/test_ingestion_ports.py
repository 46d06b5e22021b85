"""The ingestion core's rules that reach its peers (bulk labeling by search, switching an app's
embedding model), with in-memory fakes of its peer ports (``ports.SearchPeer``,
``ports.EmbeddingPeer``) over the real SQLite store; and the one map of a peer's failure."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from firstlight import errors
from firstlight.blobstore import LocalBlobStore
from firstlight.clients.errors import RpcError, as_peer_failure, from_rpc_error
from firstlight.config import ImageLimits
from firstlight.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.ports import InputFilter, SearchQuery, Selection
from firstlight.ingestion.store import MetadataStore, make_engine


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


class FakeSearch:
    """Hits i0, i1, … with scores 1.0, 0.9, …, served in pages as the SearchService does."""

    def __init__(self, total: int = 25) -> None:
        self.hits = [(f"i{n}", 1.0 - n / 10) for n in range(total)]
        self.calls: list[tuple[SearchQuery, InputFilter, int, str]] = []

    async def search_page(self, app_id: str, query: SearchQuery, flt: InputFilter, page_size: int, page_token: str):  # type: ignore[no-untyped-def]
        self.calls.append((query, flt, page_size, page_token))
        start = int(page_token or 0)
        end = start + page_size
        return self.hits[start:end], str(end) if end < len(self.hits) else ""


class FakeEmbedding:
    def __init__(self, refuse: errors.FirstlightError | None = None) -> None:
        self.refuse = refuse
        self.asked: list[tuple[str, str]] = []

    async def check_model(self, app_id: str, model: str) -> None:
        self.asked.append((app_id, model))
        if self.refuse is not None:
            raise self.refuse


@pytest.fixture
def parts(tmp_path: Path):  # type: ignore[no-untyped-def]
    search, embedding = FakeSearch(), FakeEmbedding()
    woken: list[int] = []
    core = Ingestion(
        MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}")), LocalBlobStore(tmp_path / "blobs"), ImageLimits(),
        search=search, embedding=embedding, on_events=lambda: woken.append(1),
    )  # fmt: skip
    core.create_app("app")
    core.post_inputs("app", [NewInput(png(n), id=f"i{n}") for n in range(4)])
    return core, search, embedding, woken


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_bulk_by_ids_labels_each_once_without_searching(parts) -> None:  # type: ignore[no-untyped-def]
    core, search, _, _ = parts
    result = run(core.bulk_annotate("app", Selection(input_ids=("i1", "i0", "i1")), ["cat"], []))
    assert result.input_ids == ["i1", "i0"] and result.scores == [] and search.calls == []
    assert core.get_input("app", "i1").concepts == ["cat"] and core.get_input("app", "i0").concepts == ["cat"]


def test_bulk_by_search_pages_until_max_results_or_min_score(parts) -> None:  # type: ignore[no-untyped-def]
    core, search, _, _ = parts
    sel = Selection(query=SearchQuery(text="cat"), filter=InputFilter(("dog",), 1, True), max_results=3)
    result = run(core.bulk_annotate("app", sel, ["cat"], [], dry_run=True))
    assert result.input_ids == ["i0", "i1", "i2"] and result.scores == pytest.approx([1.0, 0.9, 0.8])
    assert search.calls == [(SearchQuery(text="cat"), InputFilter(("dog",), 1, True), 3, "")]
    assert core.get_input("app", "i0").concepts == []  # a dry run changes nothing
    search.hits = [(f"i{n % 4}", 1.0 - n / 10_000) for n in range(2500)]
    search.calls.clear()
    many = run(core.bulk_annotate("app", Selection(query=SearchQuery(input_id="i0"), max_results=2500), ["x"], [], dry_run=True))
    assert len(many.input_ids) == 2500 and [c[2:] for c in search.calls] == [(1000, ""), (1000, "1000"), (500, "2000")]
    cut = run(core.bulk_annotate("app", Selection(query=SearchQuery(image=b"img"), max_results=10_000, min_score=0.90005), ["x"], [], dry_run=True))
    assert len(cut.input_ids) == 1000 and cut.scores[-1] == pytest.approx(0.9001)  # stops at the first hit under min_score


@pytest.mark.parametrize(
    ("selection", "add", "match"),
    [
        (Selection(), ["c"], "exactly one"),
        (Selection(input_ids=("i0",), query=SearchQuery(text="x")), ["c"], "exactly one"),
        (Selection(query=SearchQuery(text="x", input_id="i0")), ["c"], "exactly one"),
        (Selection(input_ids=("i0",)), [], "add and/or remove"),
        (Selection(query=SearchQuery(text="x"), max_results=10_001), ["c"], "max_results"),
    ],
)
def test_bulk_rules_refuse_before_searching(parts, selection: Selection, add: list[str], match: str) -> None:  # type: ignore[no-untyped-def]
    core, search, _, _ = parts
    with pytest.raises(InvalidArgument, match=match):
        run(core.bulk_annotate("app", selection, add, []))
    with pytest.raises(NotFound):
        run(core.bulk_annotate("nope", Selection(query=SearchQuery(text="x")), ["c"], []))
    assert search.calls == []


def test_bulk_by_search_without_a_search_peer_is_a_failed_precondition(tmp_path: Path) -> None:
    core = Ingestion(MetadataStore(make_engine(f"sqlite:///{tmp_path / 'm.db'}")), LocalBlobStore(tmp_path / "b"), ImageLimits())
    core.create_app("app")
    with pytest.raises(FailedPrecondition, match="search"):
        run(core.bulk_annotate("app", Selection(query=SearchQuery(text="x")), ["c"], []))


def test_switch_asks_the_embedding_peer_by_public_name_only_when_it_changes(parts) -> None:  # type: ignore[no-untyped-def]
    core, _, embedding, woken = parts
    woken.clear()
    app, changed, n = run(core.switch_embedding_model("app", "emb@2"))
    assert (app["embedding_model"], changed, n) == ("fl.app.emb@2", True, 4)
    assert embedding.asked == [("app", "emb@2")] and woken == [1]
    assert run(core.switch_embedding_model("app", "emb@2"))[1:] == (False, 0)
    assert run(core.switch_embedding_model("app", ""))[1:] == (True, 4)  # the backbone: nothing to ask
    assert embedding.asked == [("app", "emb@2")]


def test_switch_refused_by_the_peer_or_for_an_unknown_app_changes_nothing(parts) -> None:  # type: ignore[no-untyped-def]
    core, _, embedding, _ = parts
    with pytest.raises(NotFound, match="app 'nope'"):
        run(core.switch_embedding_model("nope", "emb"))
    with pytest.raises(InvalidArgument):
        run(core.switch_embedding_model("app", "fl.other.emb"))  # a Triton name, another app's
    assert embedding.asked == []
    embedding.refuse = FailedPrecondition("embedding model 'emb': not an embedder")
    with pytest.raises(FailedPrecondition, match="not an embedder"):
        run(core.switch_embedding_model("app", "emb"))
    assert core.get_app("app")["embedding_model"] == "" and core.store.outbox_size() == 4  # the uploads' only


def test_writes_wake_the_relay(parts) -> None:  # type: ignore[no-untyped-def]
    core, _, _, woken = parts
    woken.clear()
    core.annotate("app", [("i0", ["cat"], [], 0)])
    core.delete_inputs("app", ["i3"])
    core.post_inputs("app", [NewInput(png(9), id="late")])
    assert woken == [1, 1, 1]
    core.list_inputs("app")  # reads do not
    assert woken == [1, 1, 1]


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):  # type: ignore[no-untyped-def]
        return ()


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Unavailable),
        (grpc.StatusCode.INTERNAL, Unavailable),
        (grpc.StatusCode.UNAUTHENTICATED, Unavailable),  # the peer refused *our* key: not the caller's fault
        (grpc.StatusCode.PERMISSION_DENIED, Unavailable),
    ],
)
def test_a_peers_failure_keeps_request_errors_and_is_unavailable_otherwise(code: grpc.StatusCode, kind: type) -> None:
    error = from_rpc_error(FakeRpcError(code, "details"))  # type: ignore[arg-type]
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        assert isinstance(error, RpcError)
    mapped = as_peer_failure(error, "search failed: ")
    assert type(mapped) is kind and str(mapped) == "search failed: details"


def test_servicer_turns_a_bulk_selection_into_the_cores_selection() -> None:
    from firstlight.ingestion.servicer import selection_to_domain
    from firstlight.v1 import common_pb2, ingestion_pb2

    flt = common_pb2.InputFilter(concepts=["dog"], split=2, labeled=common_pb2.LABELED_FILTER_UNLABELED)
    sel = selection_to_domain(ingestion_pb2.BulkSelection(search_text="cat", filter=flt, max_results=7, min_score=0.5))
    assert sel == Selection((), SearchQuery(text="cat"), InputFilter(("dog",), 2, False), 7, 0.5)
    bad = common_pb2.InputFilter(labeled=7)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"^selection\.filter\.labeled: unknown LabeledFilter value 7$"):
        selection_to_domain(ingestion_pb2.BulkSelection(search_input_id="i0", filter=bad))
    # listed ids ignore the filter, as they always did
    assert selection_to_domain(ingestion_pb2.BulkSelection(input_ids=["a"], filter=bad)).input_ids == ("a",)
