"""The embedded local stack: a real Kafka-protocol broker, a real Triton server and the six
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
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from firstlight import fsmodes
from firstlight.config import DEFAULT_MODEL_REPOSITORY, SupervisorSettings, TritonSettings
from firstlight.messaging.broker import LocalBroker
from firstlight.triton import tuning
from firstlight.triton.server import LocalTritonServer

log = logging.getLogger(__name__)

SERVICES = ["ingestion", "embedding", "search", "inference", "training", "curation"]
#: The HTTP API gateway and Portal (firstlight.gateway), started after the gRPC services.
GATEWAY = "gateway"
TRITON_MODELS = ["backbone", "general"]
#: The services that call Triton: only they get its access token.
TRITON_CLIENTS = ("embedding", "inference")
STACK_FILE = "stack.json"
#: Written by the supervisor of ``firstlight up``: each component's pid, restarts, start time and
#: last exit (read by ``firstlight status``).
SUPERVISOR_FILE = "supervisor.json"
COMPONENTS = ["broker", "triton", *SERVICES, "gateway"]
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
    #: Watch the components and restart crashed ones with backoff (``firstlight up``). Off for
    #: test stacks whose harness kills and restarts components itself: one owner of restarts.
    supervise: bool = False
    supervisor_policy: RestartPolicy | None = None

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
        # Triton refuses every call but health without this token (held by the services only).
        self.triton_token = self.extra_env.get("FIRSTLIGHT_TRITON_TOKEN") or "flt_" + secrets.token_urlsafe(32)
        # Internal events are signed with this (messaging.signing); only the services hold it.
        self.event_keys = self.extra_env.get("FIRSTLIGHT_EVENT_KEYS") or f"k{secrets.token_hex(4)}:{secrets.token_urlsafe(32)}"
        self.triton_tuning: tuning.BackboneTuning | None = None
        self.supervisor: Supervisor | None = None
        self._saved_umask: int | None = None
        self.gateway: ServiceProcess | None = None
        # Encrypts the Portal's session cookies; fresh per start (signs everyone out on restart).
        self.session_secret = self.extra_env.get("FIRSTLIGHT_SESSION_SECRET") or secrets.token_urlsafe(32)

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> LocalStack:
        # Owner-only state (docs/security.md): umask 077 from here on, for this process and every
        # process it starts (broker, Triton and its /dev/shm regions, the services), restored by
        # stop(); what an older run left (or the copied repository's 0644) is tightened below.
        if self._saved_umask is None:
            self._saved_umask = os.umask(fsmodes.OWNER_ONLY_UMASK)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Triton reads a writable copy of the repository: training exports new versions into it.
        shutil.copytree(self.model_repository, self.runtime_repository, dirs_exist_ok=True)
        fsmodes.restrict_tree(self.data_dir)
        # Serve the backbone the way this host serves best (instances, threads, batch sizes).
        self.triton_tuning = tuning.choose(self.triton_settings())
        tuning.tune_repository(self.runtime_repository, self.triton_tuning)
        log.info("triton backbone tuning: %s", self.triton_tuning)
        self.broker = LocalBroker(port=self.broker_port, log_file=self.log_dir / "broker.log").start()
        self.triton = LocalTritonServer(
            self.runtime_repository,
            TRITON_MODELS,
            grpc_port=self.triton_grpc_port,
            log_file=self.log_dir / "triton.log",
            access_token=self.triton_token,
            private_shm=True,  # its /dev/shm regions owner-only too
            env={"FIRSTLIGHT_ONNX_CACHE_DIR": str(self.data_dir / "onnx-cache")},  # the backbone's exported graph
        ).start()
        for name in SERVICES:
            port = self.service_ports.get(name) or free_port()
            self.services[name] = ServiceProcess(name, port, self.log_dir / f"{name}.log")
        # Search embeds its queries through the embedding service, so start that first.
        for name in SERVICES:
            self._launch_service(name, wait=False)
        for name in SERVICES:
            svc = self.services[name]
            wait_serving(svc.address, 120, svc.proc, svc.log_file)
        self.start_gateway()
        self.write_stack_file()
        if self.supervise:
            self.supervisor = Supervisor(self, self.supervisor_policy or RestartPolicy.from_settings())
            self.supervisor.start()
        return self

    def start_gateway(self) -> ServiceProcess:
        """The HTTP API and Portal: a client of the services (no key of its own), reading images
        from the same blob directory."""
        if self.gateway is None:
            self.gateway = ServiceProcess(GATEWAY, self.service_ports.get(GATEWAY) or free_port(), self.log_dir / "gateway.log")
        gw = self.gateway
        env = self.env_for("ingestion")
        for name in ("FIRSTLIGHT_GRPC_PORT", "FIRSTLIGHT_DATA_DIR", "FIRSTLIGHT_ADMIN_KEY", "FIRSTLIGHT_INTERNAL_KEY", "FIRSTLIGHT_EVENT_KEYS"):
            env.pop(name, None)  # the gateway passes each caller's key through; it holds none
        env.update(
            FIRSTLIGHT_INFERENCE_ADDR=self.services["inference"].address,
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
            # Integrations place videos submitted by reference on inputs.submit here (<app>/<file>).
            FIRSTLIGHT_VIDEO_DROP_DIR=str(self.data_dir / "video-drop"),
            FIRSTLIGHT_GRPC_HOST="127.0.0.1",
            FIRSTLIGHT_GRPC_PORT=str(svc.port),
            FIRSTLIGHT_TRITON_URL=self.triton.grpc_url,
            FIRSTLIGHT_EMBEDDING_ADDR=self.services["embedding"].address,
            FIRSTLIGHT_INGESTION_ADDR=self.services["ingestion"].address,
            FIRSTLIGHT_SEARCH_ADDR=self.services["search"].address,
            FIRSTLIGHT_TRAINING_ADDR=self.services["training"].address,
            FIRSTLIGHT_CURATION_ADDR=self.services["curation"].address,
            FIRSTLIGHT_MODEL_REPOSITORY=str(self.runtime_repository),
            FIRSTLIGHT_SHUTDOWN_GRACE_S="3",
            FIRSTLIGHT_ADMIN_KEY=self.admin_key,
            FIRSTLIGHT_INTERNAL_KEY=self.internal_key,
            PYTHONUNBUFFERED="1",
        )
        env["FIRSTLIGHT_EVENT_KEYS"] = self.event_keys
        if name in TRITON_CLIENTS:
            env["FIRSTLIGHT_TRITON_TOKEN"] = self.triton_token
        if name == "curation":
            # A stack from before curation had its own store kept curation's tables in the
            # training database: the curation service copies them over on its first start.
            env["FIRSTLIGHT_ADOPT_FROM_DATABASE_URL"] = f"sqlite:///{self.data_dir / 'training' / 'training.db'}"
        env.update(self.extra_env)
        return env

    def _owned_by_supervisor(self, what: str) -> None:
        if self.supervisor is not None and self.supervisor.is_alive():
            raise RuntimeError(f"{what}: this stack's supervisor owns restarts (LocalStack(supervise=False) to do it by hand)")

    def start_service(self, name: str, wait: bool = True) -> ServiceProcess:
        self._owned_by_supervisor(f"start_service({name!r})")
        return self._launch_service(name, wait)

    def _launch_service(self, name: str, wait: bool = True) -> ServiceProcess:
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
        self._owned_by_supervisor(f"kill_service({name!r})")
        self._stop_service(name, sig)

    def _stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
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
        self._owned_by_supervisor("restart_triton()")
        assert self.triton is not None
        self.triton.restart()

    def start_broker(self) -> None:
        """Start the broker again (same command line and port) and create the topics at once,
        before clients reconnect and the broker auto-creates them with its own partition count."""
        assert self.broker is not None
        self.broker.start()
        try:
            from firstlight.messaging.topics import ensure_topics

            ensure_topics(self.broker.bootstrap)
        except Exception as exc:  # noqa: BLE001 - the services ensure their topics too
            log.warning("topics not created after the broker started: %s", exc)

    # -- what the supervisor watches ---------------------------------------------------
    def component_pid(self, name: str) -> int | None:
        if name == "broker":
            return self.broker.pid if self.broker else None
        if name == "triton":
            return self.triton.pid if self.triton else None
        if name == GATEWAY:
            return self.gateway.proc.pid if self.gateway and self.gateway.proc else None
        proc = self.services[name].proc
        return proc.pid if proc else None

    def component_exit(self, name: str) -> int | None:
        """None while the component runs, else its exit code (-9: SIGKILL)."""
        if name == "broker":
            proc = self.broker._proc if self.broker else None
        elif name == "triton":
            proc = self.triton._proc if self.triton else None
        elif name == GATEWAY:
            proc = self.gateway.proc if self.gateway else None
        else:
            proc = self.services[name].proc
        if proc is None:
            return -1
        return proc.poll()

    def component_log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def relaunch(self, name: str) -> None:
        """Start a component that exited (the supervisor's restart)."""
        if name == "broker":
            self.start_broker()
        elif name == "triton":
            assert self.triton is not None
            self.triton.restart()  # same ports; cleans the dead server's stubs and shm first
        elif name == GATEWAY:
            if self.gateway and self.gateway.proc:
                self.gateway.proc.poll()  # reap it
            self.start_gateway()  # same port
        else:
            self._stop_service(name, signal.SIGKILL)  # reap it
            self._launch_service(name, wait=False)

    def stop(self) -> None:
        if self.supervisor is not None:  # first: nothing may be restarted while we stop
            self.supervisor.stop()
        # The gateway and every service are asked to stop at once and given one shared grace
        # period (as a pod's containers are): one after the other, a few slow drains under load
        # added up to minutes.
        procs = [self.gateway.proc] if self.gateway and self.gateway.proc else []
        procs += [svc.proc for name in reversed(SERVICES) if (svc := self.services.get(name)) and svc.proc]
        stop_all(procs, grace_s=30.0)
        if self.triton:
            self.triton.stop()
        if self.broker:
            self.broker.stop()
        (self.data_dir / STACK_FILE).unlink(missing_ok=True)
        (self.data_dir / SUPERVISOR_FILE).unlink(missing_ok=True)
        if self._saved_umask is not None:
            os.umask(self._saved_umask)
            self._saved_umask = None

    def __enter__(self) -> LocalStack:
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


def stop_all(procs: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM every running process, wait for all of them within ``grace_s`` together, then
    SIGKILL the ones still running."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop within %.0fs of SIGTERM: killing it", p.pid, grace_s)
            p.kill()
            p.wait()


def read_stack_file(data_dir: Path) -> dict[str, str]:
    path = data_dir / STACK_FILE
    if not path.exists():
        raise FileNotFoundError(f"no running stack found ({path} missing): start one with `firstlight up`")
    return json.loads(path.read_text())


# -- supervisor -----------------------------------------------------------------------


@dataclass(frozen=True)
class RestartPolicy:
    """Like a Kubernetes restart policy ``Always`` with its CrashLoopBackOff: the first restart
    after ``initial_s``, each next one after twice the delay, up to ``max_s``; a component that
    stayed up ``reset_after_s`` starts over at ``initial_s``."""

    initial_s: float = 1.0
    max_s: float = 60.0
    reset_after_s: float = 120.0
    check_interval_s: float = 1.0
    #: Component -> RSS limit in MiB; one running past it is killed and restarted like a crashed
    #: one (a Kubernetes memory limit's OOM kill and restart).
    memory_limits_mb: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: SupervisorSettings | None = None) -> RestartPolicy:
        settings = settings or SupervisorSettings()
        limits = {"broker": settings.broker_memory_limit_mb} if settings.broker_memory_limit_mb else {}
        return cls(memory_limits_mb=limits)


def rss_mb(pid: int) -> float | None:
    """A process's resident memory in MiB (None: gone or unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class ComponentStatus:
    name: str
    pid: int | None = None
    started_at: float = 0.0  # wall clock (time.time())
    restarts: int = 0
    last_exit: str = ""  # why it last went down
    state: str = "running"  # running | backoff | restarting
    next_delay_s: float = 0.0
    _restart_at: float | None = None  # monotonic
    _killed_for: str | None = None  # why the supervisor itself killed it (over its memory limit)


class Supervisor:
    """Watches the broker, Triton and every service of a :class:`LocalStack` and restarts the
    ones that exited, with exponential backoff; logs why (exit code and the log's last lines)
    and keeps ``supervisor.json`` up to date for ``firstlight status``."""

    def __init__(self, stack: LocalStack, policy: RestartPolicy | None = None, memory_of: Callable[[int], float | None] = rss_mb) -> None:
        self.stack = stack
        self.policy = policy or RestartPolicy()
        self.memory_of = memory_of
        now = time.time()
        self.components = {
            name: ComponentStatus(name, stack.component_pid(name), now, next_delay_s=self.policy.initial_s)
            for name in COMPONENTS
            if name != GATEWAY or stack.gateway is not None
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="firstlight-supervisor", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self.write()
        self._thread.start()

    def stop(self, timeout: float = 180.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.wait(self.policy.check_interval_s):
            try:
                self.check_once()
            except Exception:
                log.exception("supervisor: check failed")

    def check_once(self) -> None:
        changed = False
        for c in list(self.components.values()):
            if self._stop.is_set():
                return
            changed |= self._check(c)
        if changed:
            self.write()

    def _check(self, c: ComponentStatus) -> bool:
        now = time.monotonic()
        code = self.stack.component_exit(c.name)
        if code is None:  # running
            if c.next_delay_s != self.policy.initial_s and time.time() - c.started_at > self.policy.reset_after_s:
                c.next_delay_s = self.policy.initial_s
            self._enforce_memory_limit(c)
            return False
        if c._restart_at is None:  # just found dead
            why = c._killed_for or _describe_exit(code)
            c._killed_for = None
            c.last_exit = f"{why} at {time.strftime('%H:%M:%S')} after {_uptime(time.time() - c.started_at)}"
            c._restart_at = now + c.next_delay_s
            c.state = "backoff"
            log.warning(
                "supervisor: %s (pid %s) %s; restarting in %.1fs (restart %d). Last lines of %s:\n%s",
                c.name, c.pid, c.last_exit, c.next_delay_s, c.restarts + 1, self.stack.component_log(c.name),
                _last_lines(self.stack.component_log(c.name)),
            )  # fmt: skip
            c.next_delay_s = min(self.policy.max_s, c.next_delay_s * 2)
            return True
        if now < c._restart_at:
            return False
        c.state = "restarting"
        self.write()
        try:
            self.stack.relaunch(c.name)
        except Exception as exc:  # noqa: BLE001 - try again after the next delay
            c.last_exit = f"restart failed: {exc}"
            c._restart_at = time.monotonic() + c.next_delay_s
            c.state = "backoff"
            log.error("supervisor: restarting %s failed (%s); next try in %.1fs", c.name, exc, c.next_delay_s)
            c.next_delay_s = min(self.policy.max_s, c.next_delay_s * 2)
            return True
        c.restarts += 1
        c.pid = self.stack.component_pid(c.name)
        c.started_at = time.time()
        c._restart_at = None
        c.state = "running"
        log.warning("supervisor: %s restarted (pid %s, restart %d)", c.name, c.pid, c.restarts)
        return True

    def _enforce_memory_limit(self, c: ComponentStatus) -> None:
        limit = self.policy.memory_limits_mb.get(c.name)
        pid = self.stack.component_pid(c.name)
        if not limit or pid is None or c._killed_for is not None:
            return
        used = self.memory_of(pid)
        if used is None or used <= limit:
            return
        c._killed_for = f"killed over its memory limit ({used:.0f} MiB > {limit} MiB)"
        log.warning("supervisor: %s (pid %s) uses %.0f MiB, over its limit of %d MiB: killing it to restart it", c.name, pid, used, limit)
        try:
            os.kill(pid, signal.SIGKILL)  # as the OOM killer would; the dead-path restarts it
        except ProcessLookupError:
            pass

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return {name: {k: v for k, v in asdict(c).items() if not k.startswith("_")} for name, c in self.components.items()}

    def write(self) -> None:
        path = self.stack.data_dir / SUPERVISOR_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"updated_at": time.time(), "components": self.snapshot()}, indent=2))
        tmp.replace(path)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _uptime(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _last_lines(path: Path, n: int = 5) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4000))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return "  <no log>"
    return "\n".join("  " + line[:300] for line in lines[-n:])


def read_supervisor_file(data_dir: Path) -> dict | None:
    path = data_dir / SUPERVISOR_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
