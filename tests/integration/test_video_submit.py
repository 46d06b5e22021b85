"""A video submitted by reference on `inputs.submit`, as an event-driven integration does it: the
file is placed in the app's drop folder and a record names it. Its frames become inputs (a
redelivered record adds none); bad records are dead-lettered with the reason."""

from __future__ import annotations

import shutil
import uuid

import pytest

from firstlight.messaging import topics
from firstlight.sdk import Firstlight
from firstlight.v1 import common_pb2, events_pb2, video_pb2
from firstlight.video import synth

from .helpers import eventually
from .kafka_io import api_key_header, find_records_by_key, produce_many

pytestmark = pytest.mark.integration

APP = "video-submit"


def test_video_by_reference_on_the_submit_topic(stack, client: Firstlight, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.create_app(APP, "video")
    drop = stack.data_dir / "video-drop" / APP
    drop.mkdir(parents=True, exist_ok=True)
    clip = tmp_path / "walk.mp4"
    synth.encode(clip, synth.default_shots(1.0))
    shutil.copy(clip, drop / "walk-1.mp4")
    (drop / "notes.mp4").write_bytes(b"not a video" * 100)
    run = uuid.uuid4().hex[:6]
    auth = [(k, v.encode()) for k, v in api_key_header(stack.admin_key).items()]

    def record(name: str, video: video_pb2.VideoReference | None = None, image: bytes = b"") -> tuple[str, bytes, bytes, list]:
        event = events_pb2.InputSubmitted(header=events_pb2.EventHeader(idempotency_key=f"{run}-{name}"), app_id=APP)
        if video is not None:
            event.video.CopyFrom(video)
        if image:
            event.input.CopyFrom(common_pb2.InputSpec(image_bytes=image))
        return (topics.INPUTS_SUBMIT, f"{APP}/{run}-{name}".encode(), event.SerializeToString(), auth)

    good = video_pb2.VideoReference(file="walk-1.mp4", concepts=["outdoor"], metadata={"camera": "door"})
    bad = {
        "escape": (video_pb2.VideoReference(file="../other-app/walk.mp4"), "InvalidArgument"),
        "missing": (video_pb2.VideoReference(file="gone.mp4"), "NotFound"),
        "not-a-video": (video_pb2.VideoReference(file="notes.mp4"), "not a video"),
    }
    produce_many(
        stack.addresses["kafka"],
        [
            record("good", good),
            record("good", good),  # redelivered: nothing more
            *(record(name, ref) for name, (ref, _) in bad.items()),
            record("both", good, image=b"\x89PNG"),
        ],
    )
    frames = eventually(
        lambda: sorted(i.id for i in client.list_inputs(APP) if i.metadata.get("video_id") == "walk-1") or None, timeout=90, what="the video's frames"
    )
    assert frames[0] == "walk-1.t0000000000" and len(frames) == 4
    frame = client.get_input(APP, frames[1])
    assert frame.concepts == ["outdoor"] and frame.metadata["camera"] == "door"
    keys = {f"{APP}/{run}-{name}".encode(): words for name, (_, words) in bad.items()} | {f"{APP}/{run}-both".encode(): "not both"}
    letters = find_records_by_key(stack.addresses["kafka"], topics.dlq(topics.INPUTS_SUBMIT), set(keys))
    for key, words in keys.items():
        assert words in events_pb2.DeadLetter.FromString(letters[key].value).error, key  # type: ignore[attr-defined]
    client.wait_indexed(APP, 4, timeout=120)
    assert client.indexed_count(APP) == 4  # the redelivery added nothing
