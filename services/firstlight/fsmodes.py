"""Owner-only files for the local stack's state (docs/security.md, "The local stack").

The local stack runs with umask 077, so every file the stack, the broker, Triton (its Python
backend's /dev/shm regions included) and the services create is owner-only; ``restrict_tree``
tightens what was there before (a data directory from an older run, the model repository
copied from the source tree with its 0644/0755 modes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

OWNER_ONLY_UMASK = 0o077


def current_umask() -> int:
    """The process umask, read without changing it where the OS says it (Linux ≥ 4.7)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # (briefly) set and restore: no API reads it otherwise
    os.umask(mask)
    return mask


def shared_dir_mode() -> int:
    """Mode for a folder other processes of the deployment read (a Triton model version in a
    shared volume): 0755 under the usual umask 022, 0700 under the local stack's 077."""
    return 0o777 & ~current_umask()


def restrict_tree(root: Path) -> int:
    """Remove group and other permissions from ``root`` and everything below it (symlinks are
    not followed); returns how many entries were changed."""
    changed = 0
    for directory, dirnames, filenames in os.walk(root):
        for name in [directory, *(os.path.join(directory, n) for n in (*dirnames, *filenames))]:
            try:
                st = os.lstat(name)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
                continue
            os.chmod(name, stat.S_IMODE(st.st_mode) & ~0o077)
            changed += 1
    return changed
