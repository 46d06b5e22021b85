"""A streamed upload written to a temporary file, the byte limit enforced as chunks arrive (a
2 GiB upload never sits in memory, and an oversized one is refused at the first chunk past the
limit, not after it is all in)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from firstlight.errors import InvalidArgument, ResourceExhausted

#: Largest chunk message accepted (clients send 1-4 MiB).
MAX_CHUNK = 4 * 1024 * 1024


class Spool:
    def __init__(self, max_bytes: int, directory: Path | None = None, suffix: str = ".video") -> None:
        self.max_bytes = max_bytes
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=directory)
        self.path = Path(name)
        self._fh = os.fdopen(fd, "wb")
        self.size = 0

    def write(self, chunk: bytes) -> None:
        if len(chunk) > MAX_CHUNK:
            raise InvalidArgument(f"a chunk of {len(chunk):,} bytes: send at most {MAX_CHUNK:,} per message")
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise ResourceExhausted(
                f"video is over the limit of {self.max_bytes / 1024**2:,.1f} MiB (refused at {self.size / 1024**2:,.1f} MiB)"
            )
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

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
