"""Run a real NVIDIA Triton server locally, from the binary bundled in the nvidia-pytriton wheel.

That build only has the Python backend. Three things make it work outside pytriton:
* the backend loads `triton_python_backend_stub` from its own directory, and the wheel keeps one
  stub per Python version elsewhere, so we assemble a private backend dir (per server, in a temp
  dir) with the stub matching this interpreter -- the same thing pytriton does;
* the stub links `libpython3.X.so`, which must be *this* interpreter's (LD_LIBRARY_PATH);
* the stub's interpreter runs isolated (PYTHONPATH is ignored) and locates its prefix through
  "python3" on PATH, so this venv's bin/ goes first on PATH (see server_env()).

`python -m firstlight.triton.server --grpc-port 8001` runs it in the foreground until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import tritonclient.grpc as grpcclient

from firstlight.triton.client import TOKEN_KEY

LOG = logging.getLogger(__name__)

DEFAULT_MODELS = ("backbone", "general")
_SERVICES_DIR = Path(__file__).resolve().parents[2]


class TritonStartupError(RuntimeError):
    """The server exited or didn't become ready; the message carries the tail of its log."""


def default_model_repository() -> Path:
    return _SERVICES_DIR.parent / "deploy" / "triton" / "model_repository"


def _dist_dir() -> Path:
    import pytriton

    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def tritonserver_binary() -> Path:
    """The tritonserver executable shipped inside the nvidia-pytriton wheel."""
    path = _dist_dir() / "bin" / "tritonserver"
    if not path.is_file():
        raise FileNotFoundError(f"tritonserver binary not found at {path} (is nvidia-pytriton installed?)")
    return path


def python_backend_stub() -> Path:
    """The Python-backend stub built for this interpreter's version."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    path = _dist_dir() / "python_backend_stubs" / ver / "triton_python_backend_stub"
    if not path.is_file():
        raise FileNotFoundError(f"no Triton Python-backend stub for Python {ver} at {path}")
    return path


def server_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its Python-backend stubs."""
    env = dict(os.environ if base is None else base)

    def prepend(key: str, *paths: str) -> None:
        parts = [p for p in paths if p] + [p for p in env.get(key, "").split(os.pathsep) if p]
        env[key] = os.pathsep.join(dict.fromkeys(parts))  # de-duplicated, order kept

    # LIBDIR: without it the stub links the system libpython3.11 instead of this interpreter's and
    # every Python model fails to load. The wheel's bundled-libs dir is what pytriton adds too
    # (the binaries find it through $ORIGIN RPATHs already; this is a safety net).
    bundled_libs = _dist_dir().parent.parent / "nvidia_pytriton.libs"
    prepend("LD_LIBRARY_PATH", sysconfig.get_config_var("LIBDIR") or "", str(bundled_libs))
    # The stub embeds Python in *isolated* mode, so PYTHONPATH/PYTHONHOME are ignored. Python still
    # finds its prefix by looking up "python3" on PATH: with this venv's bin/ first it reads the
    # venv's pyvenv.cfg, so sys.path is the venv's site-packages (torch, numpy 1.26, and
    # firstlight through its editable-install .pth) instead of the base interpreter's.
    prepend("PATH", str(Path(sys.executable).parent))
    # ...and the models import the firstlight tree that started the server, not whichever one
    # the venv has installed (deploy/triton/model_repository/backbone/1/model.py).
    env.setdefault("FIRSTLIGHT_SERVICES_DIR", str(_SERVICES_DIR))
    # OpenMP threads that finish early spin for the others by default, burning a core that the
    # other backbone instance, the services and the broker need on a small host. Passive waiting
    # costs nothing measurable when the machine is idle. An explicit value in the environment wins.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, max_bytes: int = 6000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return "<no log>"


#: Everything but health (orchestrators' probes): listing, loading and unloading models
#: (model-repository), inference, metadata, configs, statistics, shared memory, trace, logging.
RESTRICTED_PROTOCOLS = ("metadata", "inference", "shared-memory", "model-config", "model-repository", "statistics", "trace", "logging")


def restricted_args(token: str) -> list[str]:
    """tritonserver flags that refuse every gRPC and HTTP call but health without the token in
    a header (Triton's restricted-protocol check: HTTP header ``firstlight-triton-token``, gRPC
    metadata ``triton-grpc-protocol-firstlight-triton-token``; the services send it, see
    firstlight.triton.client.TOKEN_HEADER). Empty for no token."""
    if not token:
        return []
    spec = f"{','.join(RESTRICTED_PROTOCOLS)}:{TOKEN_KEY}={token}"
    return [f"--grpc-restricted-protocol={spec}", f"--http-restricted-api={spec}"]


def shown_command(cmd: Sequence[str], token: str) -> str:
    """The command line as logged: the token replaced. (It cannot be kept off tritonserver's
    argv: Triton 2.51 reads the restricted-protocol settings only from its command line, parsed
    with getopt_long (no argument files), and no environment variable or config file sets them;
    docs/security.md. The log, at least, does not repeat it.)"""
    line = " ".join(cmd)
    return line.replace(token, "<token>") if token else line


class LocalTritonServer:
    """A tritonserver child process serving `models` from `model_repository` (explicit load mode).

    Ports of 0 are replaced by free ones. Use as a context manager or call start()/stop().
    """

    def __init__(
        self,
        model_repository: Path | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        log_file: Path | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 120.0,
        env: Mapping[str, str] | None = None,
        access_token: str = "",
        private_shm: bool = False,
    ) -> None:
        #: Keep the Python backend's /dev/shm regions owner-only (see _guard_shm).
        self.private_shm = private_shm
        #: With a token, every protocol but health needs it in a request header (restricted_args).
        self.access_token = access_token
        self.model_repository = Path(model_repository or default_model_repository()).resolve()
        self.models = list(models)
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self._requested_ports = (grpc_port, http_port, metrics_port)
        self.grpc_port, self.http_port, self.metrics_port = self._requested_ports
        self._user_log_file = Path(log_file) if log_file else None
        self._extra_env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._shm_prefix = ""
        self.log_file: Path | None = None

    # -- public -----------------------------------------------------------------------------------

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalTritonServer:
        if self._proc is not None:
            raise RuntimeError("server already started")
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository not found: {self.model_repository}")
        # A port we picked can be taken by another process before tritonserver binds it: retry.
        attempts = 3 if self._requested_ports == (0, 0, 0) else 1
        for attempt in range(1, attempts + 1):
            self._launch()
            try:
                self._wait_ready()
                return self
            except TritonStartupError as exc:
                port_clash = "already in use" in str(exc).lower()
                self.stop()
                if not (port_clash and attempt < attempts):
                    raise
                LOG.warning("tritonserver port clash, retrying with new ports")
        raise AssertionError("unreachable")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Graceful SIGTERM, then SIGKILL the whole process group (the stubs included)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    LOG.warning("tritonserver did not stop in %.0fs, killing it", timeout_s)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # our own session: only tritonserver + its stubs
            except ProcessLookupError:
                pass
            proc.wait()
        if self._shm_prefix:  # the backend's shm regions outlive a killed server
            for leftover in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
                leftover.unlink(missing_ok=True)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def restart(self) -> LocalTritonServer:
        """Stop and start again on the same ports, so clients keep their address (fault tests).
        Models loaded later than start-up (app model versions) are not loaded again."""
        ports = (self.grpc_port, self.http_port, self.metrics_port)
        self.stop()
        requested, self._requested_ports = self._requested_ports, ports
        try:
            return self.start()
        finally:
            self._requested_ports = requested

    def log_tail(self, max_bytes: int = 6000) -> str:
        return _tail(self.log_file, max_bytes) if self.log_file else ""

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------

    def _prepare_backends(self, workdir: Path) -> Path:
        """A private `--backend-directory` whose python/ dir holds this interpreter's stub."""
        src = _dist_dir() / "backends" / "python"
        dst = workdir / "backends" / "python"
        dst.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            os.symlink(src / name, dst / name)
        # The backend execs "<its dir>/triton_python_backend_stub". A symlink is enough: the
        # kernel resolves it, so the stub's $ORIGIN RPATH still finds the wheel's bundled libs.
        os.symlink(python_backend_stub(), dst / "triton_python_backend_stub")
        return dst.parent

    def _launch(self) -> None:
        grpc_port, http_port, metrics_port = self._requested_ports
        self.grpc_port = grpc_port or _free_port(self.host)
        self.http_port = http_port or _free_port(self.host)
        self.metrics_port = metrics_port or _free_port(self.host)
        self._workdir = Path(tempfile.mkdtemp(prefix="firstlight-triton-"))
        backends = self._prepare_backends(self._workdir)
        self.log_file = self._user_log_file or self._workdir / "tritonserver.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # Unique shm names: several servers (tests, other users) may share this host's /dev/shm.
        self._shm_prefix = f"firstlight_triton_{os.getpid()}_{secrets.token_hex(4)}_"

        cmd = [
            str(tritonserver_binary()),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in self.models],
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            # A full 32x224x224x3 batch plus outputs fits without growing the region.
            f"--backend-config=python,shm-default-byte-size={16 * 1024 * 1024}",
            f"--backend-config=python,shm-growth-byte-size={8 * 1024 * 1024}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=10",
            *restricted_args(self.access_token),
            "--log-verbose=0",
        ]
        env = server_env()
        env.update(self._extra_env)
        LOG.info("starting tritonserver: %s", shown_command(cmd, self.access_token))
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=self._workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() can kill the stubs too
            )
        if self.private_shm:
            threading.Thread(target=self._guard_shm, args=(self._proc, self._shm_prefix), name="triton-shm-modes", daemon=True).start()

    def _guard_shm(self, proc: subprocess.Popen[bytes], prefix: str, interval_s: float = 0.2) -> None:
        """Make the Python backend's shared-memory regions owner-only while ``proc`` runs. The
        backend creates them with an explicit 0644 (boost.interprocess sets the mode after
        creating, so the stack's umask 077 does not apply), each time a model instance starts;
        they carry the tensors of every request. Polled: a region is 0644 for at most
        ``interval_s`` after it appears (docs/security.md)."""
        while proc.poll() is None:
            for region in Path("/dev/shm").glob(f"{prefix}*"):
                try:
                    if region.stat().st_mode & 0o077:
                        region.chmod(0o600)
                except FileNotFoundError:
                    pass
            time.sleep(interval_s)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while True:
                rc = self._proc.poll()
                if rc is not None:
                    raise TritonStartupError(f"tritonserver exited with code {rc} during startup; log {self.log_file}:\n{self.log_tail()}")
                try:
                    if client.is_server_ready(client_timeout=2) and all(client.is_model_ready(m, client_timeout=2) for m in self.models):
                        return
                except Exception:  # noqa: BLE001 — not listening yet / still loading
                    pass
                if time.monotonic() > deadline:
                    raise TritonStartupError(
                        f"tritonserver not ready after {self.startup_timeout_s:.0f}s (models {self.models}); log {self.log_file}:\n{self.log_tail()}"
                    )
                time.sleep(0.2)
        finally:
            client.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firstlight.triton.server", description="Run the bundled Triton server in the foreground.")
    parser.add_argument("--model-repository", type=Path, default=default_model_repository())
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated models to load")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--log-file", type=Path, default=None, help="server log (default: a temp file)")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    server = LocalTritonServer(
        model_repository=args.model_repository,
        models=[m for m in args.models.split(",") if m],
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_file=args.log_file,
        host=args.host,
        startup_timeout_s=args.startup_timeout,
    )
    t0 = time.monotonic()
    try:
        server.start()
    except (TritonStartupError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"triton ready in {time.monotonic() - t0:.1f}s: grpc={server.grpc_url} http={server.http_url} "
        f"metrics={server.metrics_url} models={server.models} log={server.log_file}",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            if not server.is_running():
                print(f"tritonserver exited unexpectedly; log tail:\n{server.log_tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
