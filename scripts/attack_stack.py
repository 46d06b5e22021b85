"""Issue 14's attacks, run again as an attacker would against a running `firstlight up` stack.

    python scripts/attack_stack.py [DATA_DIR]      (default .firstlight; the stack must be up)

The operator part (the admin key from stack.json) makes apps A and B with one labeled image each
and a key for A. The attacker part uses only A's key, the broker's address and Triton's address:
cross-app model use, trailing newlines, forged and replayed records on the internal topics,
Triton without the token, forged page tokens. Prints one line per attack (what came back, what
is expected) and exits 1 if any attack got through.
"""

from __future__ import annotations

import base64
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc

from firstlight import datasets
from firstlight.messaging import topics
from firstlight.sdk import Firstlight, UploadItem
from firstlight.stack import read_stack_file
from firstlight.v1 import common_pb2, embedding_pb2, events_pb2, ingestion_pb2, training_pb2

RUN = uuid.uuid4().hex[:6]
A, B = f"atk-a-{RUN}", f"atk-b-{RUN}"
results: list[tuple[str, str, str, bool]] = []


def status(call: Callable[[], object]) -> str:
    try:
        call()
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name  # type: ignore[attr-defined]


def check(attack: str, got: str, expected: str | tuple[str, ...]) -> None:
    wanted = (expected,) if isinstance(expected, str) else expected
    results.append((attack, got, "|".join(wanted), any(w in got for w in wanted)))


def dead_letters(bootstrap: str, sent: list, timeout: float = 90) -> dict[tuple[str, int, int], str]:  # type: ignore[type-arg]
    from kafka import KafkaConsumer

    want = {(m.topic, m.partition, m.offset) for m in sent}
    reader = KafkaConsumer(
        *{topics.dlq(m.topic) for m in sent}, bootstrap_servers=bootstrap, group_id=f"attacker-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )  # fmt: skip
    found: dict[tuple[str, int, int], str] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not want <= set(found):
            for records in reader.poll(timeout_ms=500).values():
                for r in records:
                    letter = events_pb2.DeadLetter.FromString(r.value)
                    where = (letter.source_topic, letter.source_partition, letter.source_offset)
                    if where in want:
                        found[where] = letter.error
    finally:
        reader.close()
    return found


def first_record(bootstrap: str, topic: str, match: Callable[[object], bool], timeout: float = 60):  # type: ignore[no-untyped-def]
    from kafka import KafkaConsumer

    reader = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"attacker-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=500).values():
                for r in records:
                    if match(r):
                        return r
    finally:
        reader.close()
    raise SystemExit(f"no genuine record to capture on {topic}")


def main(data_dir: Path) -> int:
    addrs = read_stack_file(data_dir)
    bootstrap = addrs["kafka"]
    photo = datasets.sample_photo("coffee")
    # -- operator: two apps, one labeled image each, a key for A
    with Firstlight.from_stack(data_dir) as admin:
        for app in (A, B):
            admin.create_app(app)
            admin.upload(app, [UploadItem(photo, ["coffee"], id=f"{app}-1")])
        _, key_a = admin.create_api_key(A, "attacker")
        _, key_b = admin.create_api_key(B, "owner")
        for app in (A, B):
            admin.wait_indexed(app, 1, timeout=180)

    with Firstlight.from_addresses(addrs, api_key=key_a) as atk, Firstlight.from_addresses(addrs, api_key=key_b) as owner:
        # 1. another app's models through the embedding service (raw Triton names and B's ids)
        emb = atk.embedding
        assert emb is not None
        check(
            "EmbedImages(model=fl.<B>.m)",
            status(lambda: emb.EmbedImages(embedding_pb2.EmbedImagesRequest(images=[photo], model=f"fl.{B}.m"), timeout=60)),
            "INVALID_ARGUMENT",
        )
        check(
            "EmbedImages(app_id=B, model=m)",
            status(lambda: emb.EmbedImages(embedding_pb2.EmbedImagesRequest(images=[photo], model="m", app_id=B), timeout=60)),
            "PERMISSION_DENIED",
        )
        check(
            "DescribeEmbeddingModel(fl.<B>.m)",
            status(lambda: emb.DescribeEmbeddingModel(embedding_pb2.DescribeEmbeddingModelRequest(model=f"fl.{B}.m"), timeout=60)),
            "INVALID_ARGUMENT",
        )
        check(
            "SetEmbeddingModel(A, fl.<B>.m@1)",
            status(lambda: atk.ingestion.SetEmbeddingModel(ingestion_pb2.SetEmbeddingModelRequest(app_id=A, embedding_model=f"fl.{B}.m@1"), timeout=60)),
            "INVALID_ARGUMENT",
        )
        # 2. trailing newlines and other whole-string cases
        check(
            "CreateApp(id='evil\\n') with an app key",
            status(lambda: atk.ingestion.CreateApp(ingestion_pb2.CreateAppRequest(id="evil\n"), timeout=30)),
            ("PERMISSION_DENIED", "INVALID_ARGUMENT"),
        )
        spec = common_pb2.InputSpec(id="x\n", image_bytes=photo)
        check(
            "PostInputs(id='x\\n')",
            status(lambda: atk.ingestion.PostInputs(ingestion_pb2.PostInputsRequest(app_id=A, inputs=[spec]), timeout=60)),
            "INVALID_ARGUMENT",
        )
        trn = atk.training
        assert trn is not None
        check(
            "CreateModel(model_id='m\\n')",
            status(lambda: trn.CreateModel(training_pb2.CreateModelRequest(app_id=A, model_id="m\n", template="classifier", concepts=["coffee"]), timeout=60)),
            "INVALID_ARGUMENT",
        )
        # 7. page tokens: a forged one, and A's own token used on B
        forged = base64.urlsafe_b64encode(b"s:0").decode()
        check(
            "ListInputs(forged page token)",
            status(lambda: atk.ingestion.ListInputs(ingestion_pb2.ListInputsRequest(app_id=A, page_token=forged), timeout=30)),
            "INVALID_ARGUMENT",
        )
        got = atk.ingestion.GetInput(ingestion_pb2.GetInputRequest(app_id=A, input_id=f"{A}-1"), timeout=30).blob_uri
        check("GetInput blob_uri shows no server path", got[:40], "blob:")
        check(
            "GetInput(app B) with A's key",
            status(lambda: atk.ingestion.GetInput(ingestion_pb2.GetInputRequest(app_id=B, input_id=f"{B}-1"), timeout=30)),
            "PERMISSION_DENIED",
        )

        # 3. forged records on the internal topics (unsigned), then genuine ones replayed
        from kafka import KafkaProducer

        header = events_pb2.EventHeader(idempotency_key=f"atk-{RUN}")
        forged_records = {
            topics.INPUTS_DELETED: events_pb2.InputsDeleted(header=header, app_id=B, input_ids=[f"{B}-1"]),
            topics.ANNOTATIONS_CHANGED: events_pb2.AnnotationsChanged(header=header, app_id=B, input_id=f"{B}-1", concepts=["pwned"], label_revision=99),
            topics.MODEL_VERSION_READY: events_pb2.ModelVersionReady(header=header, app_id=B, model_id="m", version="1", triton_model="general", serving=True),
        }
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        try:
            sent = [
                producer.send(
                    t,
                    key=topics.event_key(B, f"{B}-1").decode().encode(),
                    value=m.SerializeToString(),
                    headers=[("message-type", m.DESCRIPTOR.full_name.encode())],
                ).get(timeout=30)
                for t, m in forged_records.items()
            ]
        finally:
            producer.close()
        letters = dead_letters(bootstrap, sent)
        for m in sent:
            check(f"forged unsigned record on {m.topic}", letters.get((m.topic, m.partition, m.offset), "ACCEPTED"), "unsigned record")

        # Genuine records captured off the broker, replayed after their effect was undone.
        owner.annotate(B, {f"{B}-1": ["tea"]})  # revision 2
        owner.annotate(B, remove={f"{B}-1": ["tea"]})  # revision 3
        key = topics.event_key(B, f"{B}-1")
        relabel = first_record(
            bootstrap, topics.ANNOTATIONS_CHANGED, lambda r: r.key == key and events_pb2.AnnotationsChanged.FromString(r.value).label_revision == 2
        )  # type: ignore[attr-defined]
        owner.ingestion.DeleteInputs(ingestion_pb2.DeleteInputsRequest(app_id=B, input_ids=[f"{B}-1"]), timeout=30)
        deletion = first_record(
            bootstrap, topics.INPUTS_DELETED, lambda r: r.key == topics.event_key(B) and f"{B}-1" in events_pb2.InputsDeleted.FromString(r.value).input_ids
        )  # type: ignore[attr-defined]
        owner.upload(B, [UploadItem(photo, ["lynx"], id=f"{B}-1")])  # uploaded again, same id
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                hits = owner.search_by_image(B, input_id=f"{B}-1", top_k=1).hits
            except Exception:  # noqa: BLE001 - not indexed yet
                hits = []
            if hits and list(hits[0].concepts) == ["lynx"]:
                break
            time.sleep(0.5)
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        try:
            sent = [producer.send(r.topic, key=r.key, value=r.value, headers=list(r.headers)).get(timeout=30) for r in (relabel, deletion)]
        finally:
            producer.close()
        letters = dead_letters(bootstrap, sent)
        for m in sent:
            check(f"genuine {m.topic} replayed after its effect was undone", letters.get((m.topic, m.partition, m.offset), "ACCEPTED"), "stale record")
        hits = owner.search_by_image(B, input_id=f"{B}-1", top_k=1).hits
        check("B's re-upload after the replays", f"{hits[0].input_id} {list(hits[0].concepts)}" if hits else "GONE", f"{B}-1 ['lynx']")

    # 4. Triton without the services' token
    import tritonclient.grpc as tgrpc
    from tritonclient.utils import InferenceServerException

    client = tgrpc.InferenceServerClient(addrs["triton"])
    for name, call in {
        "Triton repository index": lambda: client.get_model_repository_index(),
        "Triton unload general": lambda: client.unload_model("general"),
        "Triton model metadata": lambda: client.get_model_metadata("general"),
    }.items():
        try:
            call()
            got = "OK"
        except InferenceServerException as exc:
            got = str(exc.status())
        check(f"{name} without the token", got, "UNAVAILABLE")
    client.close()

    # 5. state files owner-only
    loose = []
    for p in data_dir.rglob("*"):
        try:
            if not p.is_symlink() and p.stat().st_mode & 0o077:
                loose.append(str(p))
        except FileNotFoundError:  # removed while we looked
            continue
    check("state files readable by others", f"{len(loose)} loose" + (f" e.g. {loose[0]}" if loose else ""), "0 loose")

    width = max(len(r[0]) for r in results)
    for attack, got, expected, held in results:
        print(f"{'held' if held else 'FAILED':6}  {attack:<{width}}  got {got!r:40}  expected {expected}")
    return 0 if all(r[3] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".firstlight")))
