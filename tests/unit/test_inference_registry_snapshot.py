"""The inference registry's snapshot: what a memory broker forgets (model.version.ready) comes
back from the replica's data directory at start-up; replays on top change nothing."""

from __future__ import annotations

from pathlib import Path

from firstlight.inference.registry import Registry
from firstlight.v1 import events_pb2


def ready(version: str, serving: bool, model: str = "m") -> events_pb2.ModelVersionReady:
    return events_pb2.ModelVersionReady(
        app_id="app",
        model_id=model,
        version=version,
        triton_model=f"fl.app.{model}",
        concepts=["a", "b"],
        serving=serving,
        activation="softmax",
        kind="",
        image_size=0,
    )


def test_snapshot_restores_versions_and_serving(tmp_path: Path) -> None:
    path = tmp_path / "inference" / "model_registry.json"
    first = Registry(path)
    first.apply(ready("1", True))
    first.apply(ready("2", False))  # trained, not promoted
    first.apply(ready("1", True, model="other"))
    mtime = path.stat().st_mtime_ns
    first.apply(ready("2", False))  # a replay: nothing changes, nothing written
    assert path.stat().st_mtime_ns == mtime

    again = Registry(path)  # a restarted replica, the topic empty
    model = again.get("app", "m")
    assert model is not None and model.serving == "1" and sorted(model.versions) == ["1", "2"]
    assert model.versions["2"].concepts == ["a", "b"] and model.versions["2"].triton_model == "fl.app.m"
    assert sorted(m.model_id for m in again.for_app("app")) == ["m", "other"]
    again.apply(ready("3", True))
    assert Registry(path).get("app", "m").serving == "3"  # type: ignore[union-attr]


def test_unreadable_or_missing_snapshot_starts_empty(tmp_path: Path) -> None:
    assert Registry(tmp_path / "none.json").all() == []
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert Registry(bad).all() == []
    assert Registry(None).all() == []


def test_snapshot_keeps_the_replay_protection(tmp_path: Path) -> None:
    """A serving change signed before the one applied last is a replay, also for a replica
    restarted after the broker lost the topic (the signing time is in the snapshot)."""
    path = tmp_path / "model_registry.json"
    first = Registry(path)
    assert first.apply(ready("1", True), signed_ms=1_000)
    assert first.apply(ready("2", True), signed_ms=2_000)  # promoted
    assert first.apply(ready("2", True), signed_ms=3_000)  # the same state re-sent later: protection moves on

    again = Registry(path)
    assert not again.apply(ready("1", True), signed_ms=1_500)  # a captured older promotion, replayed
    assert again.get("app", "m").serving == "2"  # type: ignore[union-attr]
    assert not again.apply(ready("1", True), signed_ms=2_500)  # older than the re-sent one, kept above
    assert again.apply(ready("1", True), signed_ms=4_000)  # a real, newer rollback
    assert Registry(path).get("app", "m").serving == "1"  # type: ignore[union-attr]

    old = tmp_path / "old.json"  # written before the field existed: loads, no protection to restore
    old.write_text('{"version": 1, "models": [{"app_id": "app", "model_id": "m", "serving": "1", "versions": []}]}')
    assert Registry(old).apply(ready("2", True), signed_ms=1)
