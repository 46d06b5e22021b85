"""What authentication costs per RPC: the same IngestionService (real servicer, SQLite store)
served three ways in one process — without the interceptor (baseline), with it resolving keys
from its own table (how the ingestion service runs), and with it resolving keys remotely over
AuthService.ResolveApiKey (how the other services run; cached after the first call) — and
``GetInput`` timed through each, interleaved in rounds so load drift hits all alike. Also the
cost of reading a 128-image PostInputs request's app ids (the generic walk).

    python -m bench.auth [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
import timeit
from pathlib import Path

import grpc

from bench.common import Row, lat_text, latency, ratio
from firstlight import datasets
from firstlight.auth import servicer as auth_servicer
from firstlight.auth.core import ApiKeys
from firstlight.auth.store import ApiKeyStore
from firstlight.blobstore import LocalBlobStore
from firstlight.config import IngestionSettings
from firstlight.hosting import keys
from firstlight.hosting.auth import AuthInterceptor, RemoteResolver, make_authenticator
from firstlight.ingestion import servicer as ingestion_servicer
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.runtime import channels
from firstlight.runtime.channels import client_channel
from firstlight.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc

RESULTS = Path(__file__).parent / "results"
APP = "bench-auth"


def run(calls: int = 2000, log=print) -> dict:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        admin, internal = "bench-admin-key-0123456789", "bench-internal-key-0123456789"
        # The remote resolver's channel presents the internal key from the environment, as in a service.
        os.environ["FIRSTLIGHT_INTERNAL_KEY"] = internal
        channels._security.cache_clear()
        settings = IngestionSettings(kafka_bootstrap="127.0.0.1:9", admin_key=admin, internal_key=internal, event_keys="bench:" + "e" * 32, rate_limit_per_s=0)
        engine = make_engine(f"sqlite:///{Path(tmp) / 'm.db'}")
        core = Ingestion(MetadataStore(engine), LocalBlobStore(Path(tmp) / "blobs"), settings)
        core.create_app(APP, APP, "")
        core.post_inputs(APP, [NewInput(image_bytes=datasets.sample_photo("coffee"), id="one")])
        key_store = ApiKeyStore(engine)
        api_keys = ApiKeys(key_store, core.get_app)
        _, app_key = key_store.create(APP, "bench")

        loop = asyncio.new_event_loop()
        ports: dict[str, int] = {}
        servers: list[grpc.aio.Server] = []

        async def start(name: str, interceptor: AuthInterceptor | None) -> None:
            server = grpc.aio.server(interceptors=[interceptor] if interceptor else None)
            ingestion_servicer.add_to_server(ingestion_servicer.IngestionServicer(core), server)
            auth_servicer.add_to_server(auth_servicer.AuthServicer(api_keys), server)
            ports[name] = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)

        async def start_all() -> None:
            await start("none", None)
            local = make_authenticator(settings, api_keys.principal)
            await start("local", AuthInterceptor(local, settings))
            remote = make_authenticator(settings, RemoteResolver(f"127.0.0.1:{ports['local']}"))
            await start("remote", AuthInterceptor(remote, settings))

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(start_all(), loop).result(30)
        cases = {
            "no interceptor (baseline)": ("none", ""),
            "admin key (compared locally)": ("local", admin),
            "app key, resolved from the local table (ingestion)": ("local", app_key),
            "app key, resolved over ResolveApiKey, cached (other services)": ("remote", app_key),
        }
        stubs = {}
        for name, (server, key) in cases.items():
            channel = client_channel(f"127.0.0.1:{ports[server]}", api_key=key)
            stubs[name] = ingestion_pb2_grpc.IngestionServiceStub(channel)
        request = ingestion_pb2.GetInputRequest(app_id=APP, input_id="one")
        for stub in stubs.values():  # warm up (and fill the remote cache)
            for _ in range(50):
                stub.GetInput(request, timeout=10)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        rounds = 5
        for _ in range(rounds):
            for name, stub in stubs.items():
                for _ in range(calls // rounds):
                    t0 = time.perf_counter()
                    stub.GetInput(request, timeout=10)
                    samples[name].append(time.perf_counter() - t0)
        stats = {name: latency(s) for name, s in samples.items()}
        for server in servers:
            asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    post = ingestion_pb2.PostInputsRequest(
        app_id=APP, inputs=[common_pb2.InputSpec(id=f"i{n}", image_bytes=b"x" * 1000, concepts=["a", "b", "c"], metadata={"k": "v"}) for n in range(128)]
    )
    n = 2000
    scope_s = timeit.timeit(lambda: keys.request_scope(post), number=n) / n

    base = stats["no interceptor (baseline)"]["p50_s"]
    rows = [
        Row(
            f"GetInput, {name}",
            lat_text(s),
            lat_text(stats["no interceptor (baseline)"]) if name != "no interceptor (baseline)" else "-",
            f"{ratio(s['p50_s'], base):.2f}x p50",
        )
        for name, s in stats.items()
    ]
    rows.append(Row("app ids + largest repeated field of a 128-image PostInputs", f"{scope_s * 1e6:.0f} us per request", "-", "-"))
    for row in rows:
        log(f"{row.benchmark}: {row.figure} | baseline {row.baseline} | {row.ratio}")
    result = {"stats": stats, "request_scope_128_inputs_s": scope_s, "rows": [r.as_dict() for r in rows]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "auth.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    run(parser.parse_args().calls)


if __name__ == "__main__":
    main()
