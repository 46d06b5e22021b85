"""Which records may still change an input: the replay rule of the internal events.

A signature proves a record came from a service, not that it is still current: a captured
``inputs.deleted`` replayed after the input was uploaded again, or an ``annotations.changed``
replayed after the labels changed again, would undo newer state. So every per-input record
carries a *stamp*: the input's **generation** (when this incarnation of ``(app, id)`` was
stored, in microseconds: a re-upload after a delete gets a larger one) and its **label
revision** (bumped by every label change of that incarnation). A consumer compares the record's
stamp with the state it would change and refuses an older one. Equal stamps are a redelivery
(at-least-once), which is applied again harmlessly, not refused.

Generation 0 is "a record from before generations": the oldest, so it still applies to state
that has none (an upgrade in flight) and never to state stamped since.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple


def generation_of(created_at: datetime) -> int:
    """An input's generation: its creation time in microseconds since the epoch (UTC)."""
    if created_at.tzinfo is None:  # SQLite drops the zone; the stores write UTC
        created_at = created_at.replace(tzinfo=UTC)
    delta = created_at - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class Stamp(NamedTuple):
    """What a per-input record (or a stored point) is about: compared as (generation, revision)."""

    generation: int
    revision: int = 0


def stale_update(incoming: Stamp, current: Stamp | None, deleted_through: int | None) -> str | None:
    """Why a record stamped ``incoming`` must not change an input whose stored state is stamped
    ``current`` (None: nothing stored) and whose generations up to ``deleted_through`` were
    deleted (None: never); None when it may. Used for embeddings and label states."""
    if deleted_through is not None and incoming.generation <= deleted_through:
        return f"input generation {incoming.generation} was deleted (deleted through generation {deleted_through})"
    if current is not None and incoming < current:
        if incoming.generation < current.generation:
            return f"input generation {incoming.generation} is older than the stored generation {current.generation}"
        return f"label revision {incoming.revision} is older than the stored revision {current.revision}"
    return None


def stale_delete(deleted: int | None, current: Stamp | None) -> str | None:
    """Why a deletion of generation ``deleted`` (None: a record from before generations, which
    deletes whatever is there) must not remove an input stored as ``current``; None when it may
    (or when nothing is stored)."""
    if deleted is None or current is None or current.generation <= deleted:
        return None
    return f"deletes generation {deleted}, but generation {current.generation} was stored since"
