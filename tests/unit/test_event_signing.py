"""Issue 14, item 3: internal events are signed with a key only the services hold; forged,
altered, moved, stale and unsigned records are refused with a reason; two keys during rotation."""

from __future__ import annotations

import pytest

from firstlight.inference.registry import Registry
from firstlight.messaging import signing
from firstlight.messaging.signing import BadSignature, EventKeys, sign, verify
from firstlight.v1 import events_pb2

OLD = "k1:" + "a" * 32
NEW = "k2:" + "b" * 32
T = "model.version.ready"
MT = "firstlight.v1.ModelVersionReady"
NOW = 1_800_000_000_000


def test_signed_records_verify_and_bind_topic_key_type_and_value() -> None:
    keys = EventKeys.parse(OLD)
    header = sign(keys, T, b"app/m", MT, b"value", now_ms=NOW)
    assert verify(keys, T, b"app/m", MT, b"value", header, now_ms=NOW).key_id == "k1"
    for topic, key, mt, value in (
        (T, b"app/m", MT, b"valuE"),
        (T, b"other/m", MT, b"value"),
        ("inputs.deleted", b"app/m", MT, b"value"),
        (T, b"app/m", "x", b"value"),
    ):
        with pytest.raises(BadSignature, match="forged or altered"):
            verify(keys, topic, key, mt, value, header, now_ms=NOW)


def test_unsigned_malformed_and_foreign_keys_are_refused() -> None:
    keys = EventKeys.parse(OLD)
    with pytest.raises(BadSignature, match="unsigned"):
        verify(keys, T, b"k", MT, b"v", None, now_ms=NOW)
    # "²" is a digit to str.isdigit() but not to int(): malformed, not a crash of the consumer
    for bad in ("v1;k1;x;00", "v2;k1;1;" + "0" * 64, "garbage", "v1;k1;1;" + "0" * 63 + "\n", "v1;k1;²;" + "0" * 64, "v1;k1; 1;" + "0" * 64):
        with pytest.raises(BadSignature, match="malformed"):
            verify(keys, T, b"k", MT, b"v", bad, now_ms=NOW)
    attacker = EventKeys.parse("k1:" + "c" * 32)  # same id, another secret
    with pytest.raises(BadSignature, match="forged"):
        verify(keys, T, b"k", MT, b"v", sign(attacker, T, b"k", MT, b"v", now_ms=NOW), now_ms=NOW)
    with pytest.raises(BadSignature, match="unknown event key"):
        verify(keys, T, b"k", MT, b"v", sign(EventKeys.parse("kx:" + "c" * 32), T, b"k", MT, b"v", now_ms=NOW), now_ms=NOW)


def test_freshness_window_and_clock_skew() -> None:
    keys = EventKeys.parse(OLD)
    day = 86_400_000
    old = sign(keys, T, b"k", MT, b"v", now_ms=NOW - 8 * day)
    with pytest.raises(BadSignature, match="replayed or stale"):
        verify(keys, T, b"k", MT, b"v", old, now_ms=NOW)
    assert verify(keys, T, b"k", MT, b"v", old, now_ms=NOW, max_age_s=0)  # a replaying consumer
    with pytest.raises(BadSignature, match="future"):
        verify(keys, T, b"k", MT, b"v", sign(keys, T, b"k", MT, b"v", now_ms=NOW + 3_600_000), now_ms=NOW)


def test_rotation_with_two_keys() -> None:
    old, both_new_second, both_new_first, new = (EventKeys.parse(s) for s in (OLD, f"{OLD},{NEW}", f"{NEW},{OLD}", NEW))
    from_old = sign(old, T, b"k", MT, b"v", now_ms=NOW)
    from_new = sign(both_new_first, T, b"k", MT, b"v", now_ms=NOW)
    for verifier in (both_new_second, both_new_first):  # mid-rotation: both verify
        assert verify(verifier, T, b"k", MT, b"v", from_old, now_ms=NOW).key_id == "k1"
        assert verify(verifier, T, b"k", MT, b"v", from_new, now_ms=NOW).key_id == "k2"
    with pytest.raises(BadSignature, match="unknown event key"):  # the old key is gone at the end
        verify(new, T, b"k", MT, b"v", from_old, now_ms=NOW)


@pytest.mark.parametrize("spec", ["", "nokey", "k1:short", "bad id:" + "a" * 32, f"{OLD},{OLD}"])
def test_bad_key_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        EventKeys.parse(spec)


def test_a_replayed_serving_event_cannot_roll_a_model_back() -> None:
    registry = Registry()

    def ready(version: str) -> events_pb2.ModelVersionReady:
        return events_pb2.ModelVersionReady(app_id="a", model_id="m", version=version, triton_model="fl.a.m", concepts=["x", "y"], serving=True)

    assert registry.apply(ready("1"), NOW)
    assert registry.apply(ready("2"), NOW + 1000)
    assert registry.stale(ready("1"), NOW) and not registry.stale(ready("1"), NOW + 1000)
    assert not registry.apply(ready("1"), NOW)  # the captured v1 record, replayed
    model = registry.get("a", "m")
    assert model is not None and model.serving == "2"
    assert registry.apply(ready("1"), NOW + 2000)  # a real rollback is a new, later record
    assert registry.get("a", "m").serving == "1"  # type: ignore[union-attr]
    assert signing.signed_at_ms({signing.H_SIGNATURE: sign(EventKeys.parse(OLD), T, b"k", MT, b"v", now_ms=NOW)}) == NOW
