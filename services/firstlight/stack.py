"""The embedded local stack: a real Kafka-protocol broker, a real Triton server and the four
services, each its own process on its own port — the same processes a cluster runs, with
embedded defaults (SQLite, local blobs, Qdrant edge engine) instead of external servers.

Used by ``firstlight up`` (``make run``) and by the integration tests."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from firstlight.config import DEFAULT_MODEL_REPOSITORY, TritonSettings
from firstlight.messaging.broker import LocalBroker
from firstlight.triton import tuning
from firstlight.triton.server import LocalTritonServer

log = logging.getLogger(__name__)

SERVICES = ["ingestion", "embedding", "search", "inference", "training"]
#: The HTTP API gateway and Portal (firstlight.gateway), started after the gRPC services.
GATEWAY = "gateway"
TRITON_MODELS = ["backbone", "general"]
STACK_FILE = "stack.json"
#: The stack.json / ``addresses`` entry holding the local stack's admin key.
ADMIN_KEY_ENTRY = "admin_key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 60.0, proc: subprocess.Popen | None = None, log_file: Path | None = None) -> None:
    """Block until ``url`` answers 200 (the gateway's /healthz)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log_file.read_text()[-3000:] if log_file and log_file.exists() else ""
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not answering after {timeout_s:.0f}s")
        time.sleep(0.2)


def wait_serving(address: str, timeout_s: float = 60.0, proc: subprocess.Popen | None = None, log_file: Path | None = None) -> None:
    """Block until the gRPC health service at ``address`` says SERVING."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.poll() is not None:
                tail = log_file.read_text()[-3000:] if log_file and log_file.exists() else ""
                raise RuntimeError(f"service at {address} exited with {proc.returncode}:\n{tail}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"service at {address} not SERVING after {timeout_s:.0f}s")
            time.sleep(0.2)


@dataclass
class ServiceProcess:
    name: str
    port: int
    log_file: Path
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class LocalStack:
    data_dir: Path
    broker_port: int = 0
    triton_grpc_port: int = 0
    service_ports: dict[str, int] = field(default_factory=dict)
    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.broker: LocalBroker | None = None
        self.triton: LocalTritonServer | None = None
        self.services: dict[str, ServiceProcess] = {}
        self.runtime_repository = self.data_dir / "model_repository"
        # Fresh keys per start (docs/security.md): the admin key goes into stack.json (mode 0600)
        # for the SDK, CLI and tests; the internal key only to the services' environment.
        self.admin_key = self.extra_env.get("FIRSTLIGHT_ADMIN_KEY") or "fla_" + secrets.token_urlsafe(32)
        self.internal_key = self.extra_env.get("FIRSTLIGHT_INTERNAL_KEY") or "fli_" + secrets.token_urlsafe(32)
        self.triton_tuning: tuning.BackboneTuning | None = None
        self.gateway: ServiceProcess | None = None
        # Encrypts the Portal's session cookies; fresh per start (signs everyone out on restart).
        self.session_secret = self.extra_env.get("FIRSTLIGHT_SESSION_SECRET") or secrets.token_urlsafe(32)

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> "LocalStack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Triton reads a writable copy of the repository: training exports new versions into it.
        shutil.copytree(self.model_repository, self.runtime_repository, dirs_exist_ok=True)
        # Serve the backbone the way this host serves best (instances, threads, batch sizes).
        self.triton_tuning = tuning.choose(self.triton_settings())
        tuning.tune_repository(self.runtime_repository, self.triton_tuning)
        log.info("triton backbone tuning: %s", self.triton_tuning)
        self.broker = LocalBroker(port=self.broker_port, log_file=self.log_dir / "broker.log").start()
        self.triton = LocalTritonServer(
            self.runtime_repository, TRITON_MODELS, grpc_port=self.triton_grpc_port, log_file=self.log_dir / "triton.log"
        ).start()
        for name in SERVICES:
            port = self.service_ports.get(name) or free_port()
            self.services[name] = ServiceProcess(name, port, self.log_dir / f"{name}.log")
        # Search embeds its queries through the embedding service, so start that first.
        for name in SERVICES:
            self.start_service(name, wait=False)
        for name in SERVICES:
            svc = self.services[name]
            wait_serving(svc.address, 120, svc.proc, svc.log_file)
        self.start_gateway()
        self.write_stack_file()
        return self

    def start_gateway(self) -> ServiceProcess:
        """The HTTP API and Portal: a client of the services (no key of its own), reading images
        from the same blob directory."""
        if self.gateway is None:
            self.gateway = ServiceProcess(GATEWAY, self.service_ports.get(GATEWAY) or free_port(), self.log_dir / "gateway.log")
        gw = self.gateway
        env = self.env_for("ingestion")
        for name in ("FIRSTLIGHT_GRPC_PORT", "FIRSTLIGHT_DATA_DIR", "FIRSTLIGHT_ADMIN_KEY", "FIRSTLIGHT_INTERNAL_KEY"):
            env.pop(name, None)  # the gateway passes each caller's key through; it holds none
        env.update(
            FIRSTLIGHT_INFERENCE_ADDR=self.services["inference"].address,
            FIRSTLIGHT_TRAINING_ADDR=self.services["training"].address,
            FIRSTLIGHT_HTTP_HOST="127.0.0.1",
            FIRSTLIGHT_HTTP_PORT=str(gw.port),
            FIRSTLIGHT_SESSION_SECRET=self.session_secret,
        )
        with open(gw.log_file, "ab") as log_fh:
            gw.proc = subprocess.Popen(
                [sys.executable, "-m", "firstlight.gateway.main"], env=env, stdout=log_fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_http(f"{self.gateway_url}/healthz", 60, gw.proc, gw.log_file)
        return gw

    @property
    def gateway_url(self) -> str:
        assert self.gateway is not None
        return f"http://{self.gateway.address}"

    def triton_settings(self) -> TritonSettings:
        """FIRSTLIGHT_TRITON_* / FIRSTLIGHT_TORCH_THREADS from the environment and ``extra_env``."""
        fields = TritonSettings.model_fields
        given = {k.removeprefix("FIRSTLIGHT_").lower(): v for k, v in self.extra_env.items() if k.startswith("FIRSTLIGHT_")}
        return TritonSettings(**{k: v for k, v in given.items() if k in fields})

    def env_for(self, name: str) -> dict[str, str]:
        assert self.broker and self.triton
        svc = self.services[name]
        env = dict(os.environ)
        env.update(
            FIRSTLIGHT_KAFKA_BOOTSTRAP=self.broker.bootstrap,
            FIRSTLIGHT_DATA_DIR=str(self.data_dir / name),
            FIRSTLIGHT_BLOB_URL=f"file://{self.data_dir / 'blobs'}",
            FIRSTLIGHT_GRPC_HOST="127.0.0.1",
            FIRSTLIGHT_GRPC_PORT=str(svc.port),
            FIRSTLIGHT_TRITON_URL=self.triton.grpc_url,
            FIRSTLIGHT_EMBEDDING_ADDR=self.services["embedding"].address,
            FIRSTLIGHT_INGESTION_ADDR=self.services["ingestion"].address,
            FIRSTLIGHT_SEARCH_ADDR=self.services["search"].address,
            FIRSTLIGHT_MODEL_REPOSITORY=str(self.runtime_repository),
            FIRSTLIGHT_SHUTDOWN_GRACE_S="3",
            FIRSTLIGHT_ADMIN_KEY=self.admin_key,
            FIRSTLIGHT_INTERNAL_KEY=self.internal_key,
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start_service(self, name: str, wait: bool = True) -> ServiceProcess:
        svc = self.services[name]
        with open(svc.log_file, "ab") as log_fh:
            svc.proc = subprocess.Popen(
                [sys.executable, "-m", f"firstlight.{name}.main"],
                env=self.env_for(name),
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches the launcher only
            )
        if wait:
            wait_serving(svc.address, 120, svc.proc, svc.log_file)
        return svc

    def kill_service(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a service process (SIGKILL simulates a crash; SIGTERM a graceful stop)."""
        svc = self.services[name]
        if svc.proc and svc.proc.poll() is None:
            svc.proc.send_signal(sig)
            try:
                svc.proc.wait(30)
            except subprocess.TimeoutExpired:
                svc.proc.kill()
                svc.proc.wait()

    def restart_service(self, name: str) -> ServiceProcess:
        self.kill_service(name, signal.SIGTERM)
        return self.start_service(name)

    def restart_triton(self) -> None:
        """Stop Triton and start it on the same ports (services keep their address)."""
        assert self.triton is not None
        self.triton.restart()

    def stop(self) -> None:
        if self.gateway and self.gateway.proc and self.gateway.proc.poll() is None:
            self.gateway.proc.terminate()
            try:
                self.gateway.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.gateway.proc.kill()
                self.gateway.proc.wait()
        for name in reversed(SERVICES):
            if name in self.services:
                self.kill_service(name, signal.SIGTERM)
        if self.triton:
            self.triton.stop()
        if self.broker:
            self.broker.stop()
        (self.data_dir / STACK_FILE).unlink(missing_ok=True)

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- discovery --------------------------------------------------------------------
    @property
    def addresses(self) -> dict[str, str]:
        """Component → address, plus ``admin_key`` (what stack.json holds; the SDK's
        ``from_addresses``/``from_stack`` authenticate with it)."""
        out = {name: svc.address for name, svc in self.services.items()}
        if self.broker:
            out["kafka"] = self.broker.bootstrap
        if self.triton:
            out["triton"] = self.triton.grpc_url
        if self.gateway:
            out[GATEWAY] = self.gateway_url
        out[ADMIN_KEY_ENTRY] = self.admin_key
        return out

    def write_stack_file(self) -> None:
        path = self.data_dir / STACK_FILE
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)  # it holds the admin key: owner-only before a byte is written
        tmp.chmod(0o600)
        tmp.write_text(json.dumps(self.addresses, indent=2))
        tmp.replace(path)


def read_stack_file(data_dir: Path) -> dict[str, str]:
    path = data_dir / STACK_FILE
    if not path.exists():
        raise FileNotFoundError(f"no running stack found ({path} missing): start one with `firstlight up`")
    return json.loads(path.read_text())
