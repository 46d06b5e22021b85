"""Bounded Triton: the serving version and the most recent others per app model, on-demand
loads, and a cap on loaded app models across apps (firstlight.triton.residency)."""

from __future__ import annotations

from firstlight.triton.residency import Residency


class FakeTriton:
    def __init__(self) -> None:
        self.loaded: dict[str, list[str]] = {}
        self.calls: list[tuple[str, object]] = []

    def load(self, model: str, versions: list[str]) -> None:
        self.loaded[model] = list(versions)
        self.calls.append(("load", (model, tuple(versions))))

    def unload(self, model: str) -> None:
        self.loaded.pop(model, None)
        self.calls.append(("unload", model))


def test_serving_and_recent_versions_stay_the_rest_unload() -> None:
    t = FakeTriton()
    r = Residency(t.load, t.unload, keep_versions=3, max_models=8)
    r.announce("m", "1", serving=True)
    for v in range(2, 11):  # nine more versions, none promoted
        r.announce("m", str(v), serving=False)
    assert t.loaded["m"] == ["1", "9", "10"]  # serving v1 + the two most recent
    r.announce("m", "11", serving=True)  # promoted
    assert t.loaded["m"] == ["9", "10", "11"]
    before = len(t.calls)
    r.ensure("m", "10")  # loaded: no call
    assert len(t.calls) == before
    r.ensure("m", "2")  # pinned old version: loaded on demand, the least recently used other goes
    assert t.loaded["m"] == ["2", "10", "11"]
    r.reload("m")  # Triton restarted
    assert t.loaded["m"] == ["2", "10", "11"] and t.calls[-1] == ("load", ("m", ("2", "10", "11")))


def test_cap_on_loaded_app_models_across_apps() -> None:
    t = FakeTriton()
    r = Residency(t.load, t.unload, keep_versions=2, max_models=3)
    for app in "abcde":
        r.announce(f"fl.{app}.m", "1", serving=True)
    assert sorted(t.loaded) == ["fl.c.m", "fl.d.m", "fl.e.m"]
    r.ensure("fl.c.m", "1")  # used: most recent now
    r.ensure("fl.a.m", "1")  # unloaded earlier: loaded again, evicting the least recently used (d)
    assert sorted(t.loaded) == ["fl.a.m", "fl.c.m", "fl.e.m"]
    assert r.loaded() == {"fl.a.m": ["1"], "fl.c.m": ["1"], "fl.e.m": ["1"]}


def test_a_failed_load_records_nothing() -> None:
    t = FakeTriton()
    r = Residency(t.load, t.unload, keep_versions=2, max_models=2)
    r.announce("m", "1", serving=True)

    def broken(model: str, versions: list[str]) -> None:
        raise RuntimeError("triton down")

    r._load = broken  # type: ignore[method-assign]
    try:
        r.ensure("m", "2")
    except RuntimeError:
        pass
    assert r.loaded() == {"m": ["1"]}
