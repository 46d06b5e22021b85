"""Videos through the real ingestion core (SQLite store, blob directory, outbox): frames become
inputs with events, a repeated upload adds nothing, a segment is labeled at once."""

from pathlib import Path

import pytest

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits, VideoLimits
from firstlight.errors import InvalidArgument, NotFound, ResourceExhausted
from firstlight.ingestion.core import Ingestion
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.ingestion.video import annotate_segment, upload_video, video_summary
from firstlight.messaging import topics
from firstlight.video import synth
from firstlight.video.spool import Spool, sweep_spool


@pytest.fixture
def core(tmp_path: Path) -> Ingestion:
    store = MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}"))
    ing = Ingestion(store, LocalBlobStore(tmp_path / "blobs"), ImageLimits())
    ing.create_app("app")
    return ing


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("v") / "clip.webm"
    synth.encode(path, synth.default_shots(2.0, static_last=True), kind="webm-vp9")
    return path


def test_upload_label_a_segment_and_upload_again(core: Ingestion, clip: Path) -> None:
    s = upload_video(core, VideoLimits(), "app", "walk", clip, concepts=["outdoor"])
    assert s.frames_added == 7 and s.info["codec"] == "vp9"
    rows = core.store.get_inputs("app", s.frame_ids)
    assert rows["walk.t0000004000"].metadata["video_t"] == "4.000" and rows["walk.t0000004000"].concepts == ["outdoor"]
    events = [e for _, e in core.store.outbox_batch(1000) if e.topic == topics.INPUTS_INGESTED]
    assert len(events) == 7  # embedded and indexed like any image
    assert video_summary(core, "app", "walk")["frame_ids"] == s.frame_ids
    assert upload_video(core, VideoLimits(), "app", "walk", clip).frames_added == 0
    labeled = annotate_segment(core, "app", "walk", 2.0, 4.0, ["cup"], [], "alice (k1)")
    assert labeled == ["walk.t0000002000", "walk.t0000003000", "walk.t0000004000"]
    assert "cup" in core.get_input("app", "walk.t0000003000").concepts
    records = {c: (by, at is not None) for c, by, at in core.get_input("app", "walk.t0000003000").label_records}
    assert records["cup"] == ("alice (k1)", True)  # who and when, as image labels record them
    assert "cup" not in core.get_input("app", "walk.t0000005000").concepts
    with pytest.raises(NotFound, match="no frame between"):
        annotate_segment(core, "app", "walk", 7.5, 7.9, ["cup"], [])
    with pytest.raises(NotFound, match="video 'nope' does not exist"):
        annotate_segment(core, "app", "nope", 0, 1, ["cup"], [])


def test_refused_upload_leaves_nothing(core: Ingestion, tmp_path: Path) -> None:
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(InvalidArgument, match="not a video"):
        upload_video(core, VideoLimits(), "app", "x", bad)
    assert core.store.list_inputs("app", after_seq=0, limit=10)[2] == 0
    with pytest.raises(NotFound):
        upload_video(core, VideoLimits(), "nope", "x", bad)


def test_spool_refuses_at_the_first_chunk_past_the_limit(tmp_path: Path) -> None:
    with Spool(max_bytes=10, directory=tmp_path) as spool:
        spool.write(b"12345")
        with pytest.raises(ResourceExhausted, match="over the limit"):
            spool.write(b"123456")
    assert not list(tmp_path.iterdir())  # the temporary file is gone
    with Spool(max_bytes=10, directory=tmp_path) as spool, pytest.raises(InvalidArgument, match="no video bytes"):
        spool.finish()


def test_sweep_spool_removes_a_killed_process_upload_and_keeps_live_ones(tmp_path: Path) -> None:
    import subprocess
    import sys

    # A process killed mid-upload (SIGKILL runs no finally): its spool file stays behind.
    child = (
        "import os, signal, sys; from pathlib import Path; from firstlight.video.spool import Spool\n"
        "s = Spool(1000, Path(sys.argv[1])); s.write(b'half a video'); print(s.path, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    out = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True, check=False)
    assert out.returncode == -9, out.stderr
    dead = Path(out.stdout.strip())
    assert dead.exists()
    with Spool(1000, tmp_path) as live:  # written to, and one already finished (being processed)
        live.write(b"live")
        done = Spool(1000, tmp_path)
        done.write(b"done")
        done.finish()
        assert sweep_spool(tmp_path) == 1
        assert not dead.exists() and live.path.exists() and done.path.exists()
        done.close()
    assert not list(tmp_path.iterdir())


def test_iterate_in_thread_streams_items_errors_and_stops_early() -> None:
    import asyncio
    import threading

    from firstlight.video.spool import iterate_in_thread

    produced = []
    done = threading.Event()

    def numbers(n: int, fail: bool = False):
        for i in range(n):
            produced.append(i)
            yield i
        done.set()
        if fail:
            raise InvalidArgument("broken at the end")

    async def main() -> None:
        assert [i async for i in iterate_in_thread(lambda: numbers(5))] == [0, 1, 2, 3, 4]
        got = []
        with pytest.raises(InvalidArgument, match="broken"):
            async for i in iterate_in_thread(lambda: numbers(3, fail=True)):
                got.append(i)
        assert got == [0, 1, 2]
        produced.clear()
        done.clear()
        async for i in iterate_in_thread(lambda: numbers(10_000), maxsize=2):
            if i == 3:
                break
        await asyncio.sleep(1.5)
        assert not done.is_set() and len(produced) < 100  # the producer stopped, bounded queue

    asyncio.run(main())


def test_a_video_submitted_by_reference(core: Ingestion, clip: Path, tmp_path: Path) -> None:
    import shutil

    from firstlight.errors import FailedPrecondition
    from firstlight.ingestion.video import submit_video
    from firstlight.v1 import video_pb2

    drop = tmp_path / "drop"
    (drop / "app").mkdir(parents=True)
    (drop / "other").mkdir()
    shutil.copy(clip, drop / "app" / "walk 2.webm")
    shutil.copy(clip, drop / "other" / "theirs.webm")
    ref = video_pb2.VideoReference
    with pytest.raises(FailedPrecondition, match="FIRSTLIGHT_VIDEO_DROP_DIR"):
        submit_video(core, VideoLimits(), None, "app", ref(file="walk.webm"))
    for name in ("walk 2.webm", "../other/theirs.webm", "sub/walk.webm", ".hidden", ""):
        with pytest.raises(InvalidArgument, match="no path"):
            submit_video(core, VideoLimits(), drop, "app", ref(file=name))
    with pytest.raises(NotFound, match="not in app 'app'"):
        submit_video(core, VideoLimits(), drop, "app", ref(file="theirs.webm"))  # another app's folder is not read
    shutil.copy(clip, drop / "app" / "walk-2.webm")
    s = submit_video(core, VideoLimits(), drop, "app", ref(file="walk-2.webm", concepts=["outdoor"]))
    assert s.video_id == "walk-2" and s.frames_added == 7
    assert core.get_input("app", "walk-2.t0000002000").concepts == ["outdoor"]
    assert submit_video(core, VideoLimits(), drop, "app", ref(file="walk-2.webm", video_id="walk-2")).frames_added == 0  # a redelivery
