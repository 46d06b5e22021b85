"""Small pure parts of the reliability work: the committed bad-input corpus is what its generator
makes, the vector-store fault switch, and which Triton errors count as retryable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tritonclient.utils import InferenceServerException

from firstlight.search.faults import FaultInjectingStore
from firstlight.search.vector_store import Point, VectorStoreUnavailable
from firstlight.triton.client import TritonError, TritonUnavailable, _translate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
import make_bad_inputs as corpus


def test_committed_corpus_is_fresh() -> None:
    """Regenerating the corpus reproduces the committed files byte for byte (and nothing is missing)."""
    made = corpus.small_cases()
    for case, (ext, data) in made.items():
        path = corpus.CORPUS / f"{case}.{ext}"
        assert path.exists() and path.read_bytes() == data, f"{path.name} is stale: run python tests/corpus/make_bad_inputs.py"
        assert len(data) < 8 * 1024, f"{path.name}: keep committed cases small"
    assert set(made) | corpus.LARGE == set(corpus.EXPECTED)


class FakeStore:
    def __init__(self) -> None:
        self.upserts = 0

    def upsert(self, name: str, points: list[Point]) -> None:
        self.upserts += 1

    def count(self, name: str, filter: object = None) -> int:
        return 7

    def close(self) -> None:
        pass


def test_fault_switch_fails_every_call_while_the_file_exists(tmp_path: Path) -> None:
    inner = FakeStore()
    switch = tmp_path / "down"
    store = FaultInjectingStore(inner, switch)  # type: ignore[arg-type]
    assert store.count("inputs") == 7
    switch.touch()
    with pytest.raises(VectorStoreUnavailable, match="injected"):
        store.upsert("inputs", [])
    with pytest.raises(VectorStoreUnavailable):
        store.count("inputs")
    switch.unlink()
    store.upsert("inputs", [])
    assert inner.upserts == 1 and store.injected == 2


@pytest.mark.parametrize(
    "message, status, retryable",
    [
        ("Request for unknown model: 'general' has no available versions", "StatusCode.UNAVAILABLE", True),
        ("Request for unknown model: 'general' has no available versions", "StatusCode.INVALID_ARGUMENT", True),
        ("Request for unknown model: 'fl.a.b' is not found", "StatusCode.NOT_FOUND", True),
        ("model 'backbone' is not ready", None, True),
        ("failed to connect to all addresses", "StatusCode.UNAVAILABLE", True),
        ("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED", True),
        ("unexpected shape for input 'IMAGE'", "StatusCode.INVALID_ARGUMENT", False),
        ("Failed to process the request(s) for model 'backbone': ValueError", "StatusCode.INTERNAL", False),
    ],
)
def test_triton_errors_during_a_restart_are_retryable(message: str, status: str | None, retryable: bool) -> None:
    error = _translate(InferenceServerException(message, status=status), "infer")
    assert isinstance(error, TritonUnavailable if retryable else TritonError)


def test_every_rpc_call_in_the_code_has_a_deadline() -> None:
    """No client call without ``timeout=``: a call to a hung peer must end (issue 6: no RPC hangs
    forever). Scans every call of a method named like an RPC of our protos, outside generated code."""
    import ast
    import re

    repo = Path(__file__).resolve().parents[2]
    rpcs = set(re.findall(r"^\s*rpc\s+(\w+)", "".join(p.read_text() for p in (repo / "protos").rglob("*.proto")), re.M))
    assert {"Predict", "StreamInputs", "SearchByImage"} <= rpcs
    missing = []
    src = repo / "services" / "firstlight"
    for path in src.rglob("*.py"):
        if "v1" in path.relative_to(src).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in rpcs:
                if isinstance(node.func.value, ast.Name) and node.func.value.id == "self":
                    continue  # a servicer re-entering its own handler is not a client call
                if not any(k.arg == "timeout" for k in node.keywords) and not any(k.arg is None for k in node.keywords):
                    missing.append(f"{path.relative_to(repo)}:{node.lineno} {node.func.attr}")
    assert not missing, missing
