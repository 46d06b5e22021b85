"""A streamed upload written to a temporary file, the byte limit enforced as chunks arrive (a
2 GiB upload never sits in memory, and an oversized one is refused at the first chunk past the
limit, not after it is all in).

Spool files live in a directory the service owns (not /tmp) and each holds an exclusive
``flock`` while its upload is alive, so a restarted service can tell a dead process's leftovers
(a SIGKILL mid-upload skips every ``finally``) from a live upload and remove them:
:func:`sweep_spool`."""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from firstlight.errors import InvalidArgument, ResourceExhausted

#: Largest chunk message accepted (clients send 1-4 MiB).
MAX_CHUNK = 4 * 1024 * 1024
#: Name prefix of spool files (what :func:`sweep_spool` looks at).
SPOOL_PREFIX = "upload-"


class Spool:
    def __init__(self, max_bytes: int, directory: Path | None = None, suffix: str = ".video") -> None:
        self.max_bytes = max_bytes
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, suffix=suffix, dir=directory)
        self.path = Path(name)
        # The lock lives on the open file description: a dup keeps it after the writer closes
        # (finish) while the upload is still being processed, until close().
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd: int | None = os.dup(fd)
        self._fh = os.fdopen(fd, "wb")
        self.size = 0

    def write(self, chunk: bytes) -> None:
        if len(chunk) > MAX_CHUNK:
            raise InvalidArgument(f"a chunk of {len(chunk):,} bytes: send at most {MAX_CHUNK:,} per message")
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise ResourceExhausted(f"video is over the limit of {self.max_bytes / 1024**2:,.1f} MiB (refused at {self.size / 1024**2:,.1f} MiB)")
        self._fh.write(chunk)

    def finish(self) -> Path:
        self._fh.close()
        if self.size == 0:
            raise InvalidArgument("the upload carried no video bytes")
        return self.path

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.path.unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sweep_spool(directory: Path) -> int:
    """Remove spool files no live upload holds (left by a killed process); returns how many."""
    removed = 0
    for path in directory.glob(f"{SPOOL_PREFIX}*"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live upload (this or another process) holds it
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)
        removed += 1
    return removed


class Sink(Protocol):
    """Where an upload's chunks go: a :class:`Spool`, or a resumable upload's writer."""

    size: int

    def write(self, chunk: bytes) -> None: ...
    def finish(self) -> Path: ...
    def close(self) -> None: ...


async def spool_stream(
    messages: AsyncIterator[Any], max_bytes: int, what: str = "upload", open_sink: Callable[[Any], Sink] | None = None, directory: Path | None = None
) -> tuple[Any, Any]:
    """Read a ``header``-then-``chunk`` message stream (a ``part`` oneof) into a Spool (in
    ``directory``), or into ``open_sink(header)``; returns (header, sink). The caller closes the sink (also on error:
    a broken stream's bytes stay in a resumable sink)."""
    header = None
    spool: Any = None
    try:
        async for message in messages:
            part = message.WhichOneof("part")
            if header is None:
                if part != "header":
                    raise InvalidArgument(f"the first {what} message must be the header")
                header = message.header
                spool = await asyncio.to_thread(open_sink, header) if open_sink else Spool(max_bytes, directory)
            elif part == "header":
                raise InvalidArgument(f"a second header in the middle of the {what}")
            else:
                spool.write(message.chunk)  # at most 4 MiB into the page cache
        if header is None:
            raise InvalidArgument(f"the {what} carried no message")
        if open_sink is None:
            await asyncio.to_thread(spool.finish)
        return header, spool
    except BaseException:
        if spool is not None:
            spool.close()
        raise


T = TypeVar("T")
_END = object()


async def iterate_in_thread(make: Callable[[], Iterator[T]], maxsize: int = 32) -> AsyncIterator[T]:
    """Run a blocking iterator (decoding, model calls) in a thread and yield its items here as
    they come (bounded queue: a slow client slows the decode, not memory). If the consumer stops
    (client gone), the thread stops at its next item."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize)
    stop = threading.Event()

    def put(item: object) -> bool:
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while True:
            try:
                future.result(timeout=0.5)
                return True
            except TimeoutError:  # queue full: wait on, unless the consumer is gone
                if stop.is_set():
                    future.cancel()
                    return False

    def produce() -> None:
        try:
            for item in make():
                if stop.is_set() or not put(item):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            if not stop.is_set():
                put(exc)

    loop.run_in_executor(None, produce)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the producer ends at its next item (or within 0.5 s if blocked on the queue)
