"""Leases on the labeling queue: a team works one queue at once, and each waiting item is handed
to one labeler (a browser session: the ``holder``) for a while, so two labelers never label the
same item at the same time. A lease ends when the item gets a label, when its holder releases it
(skips it) or when it expires; the holder's live lease is handed back on the next call (a reload
shows the same item) and renewed.

Labels reach curation as events, a moment after the annotation: the Portal asks for its next
item right after labeling, when curation may still see the item waiting. So it names the items
it labeled in ``exclude`` without releasing them: they stay leased to it (nobody else gets them)
until the label arrives, and it gets the next free item. No grpc here; the RPC is in ``servicer``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, insert, select, update

from firstlight.curation.store import QUEUED, leases, queue
from firstlight.curation.stream import StreamCuration
from firstlight.domain import validation
from firstlight.errors import InvalidArgument

DEFAULT_LEASE_S = 300
LEASE_RANGE_S = (10, 3600)
_HOLDER = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_EXCLUDED = 1000


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)  # SQLite drops the zone


class QueueLeases:
    def __init__(self, stream: StreamCuration, clock: Callable[[], datetime] | None = None) -> None:
        self.stream = stream
        self.clock = clock or stream.clock

    def lease(
        self, app_id: str, holder: str, lease_seconds: int = 0, release: str = "", exclude: Sequence[str] = ()
    ) -> tuple[dict | None, datetime | None, int]:
        """(the leased queue row or None, when its lease ends, waiting items other holders have)."""
        validation.app_id(app_id)
        if not _HOLDER.fullmatch(holder or ""):
            raise InvalidArgument("holder must be 1-128 characters of A-Z a-z 0-9 _ . : -")
        seconds = lease_seconds or DEFAULT_LEASE_S
        if not LEASE_RANGE_S[0] <= seconds <= LEASE_RANGE_S[1]:
            raise InvalidArgument(f"lease_seconds must be between {LEASE_RANGE_S[0]} and {LEASE_RANGE_S[1]} (got {lease_seconds})")
        if len(exclude) > MAX_EXCLUDED:
            raise InvalidArgument(f"at most {MAX_EXCLUDED} exclude_input_ids (got {len(exclude)})")
        for i in [release, *exclude]:
            if i:
                validation.input_id(i)
        skip = set(exclude) | ({release} if release else set())
        # One writer at a time on the queue's tables (SQLite), like screening and labels.
        with self.stream._lock, self.stream.store.engine.begin() as conn:
            now = self.clock()
            expires = now + timedelta(seconds=seconds)
            mine = leases.c.app_id == app_id
            conn.execute(delete(leases).where(mine, leases.c.expires_at <= now))
            # Leases of items that got a label meanwhile are over.
            labeled = select(queue.c.input_id).where(queue.c.app_id == app_id, queue.c.state != QUEUED)
            conn.execute(delete(leases).where(mine, leases.c.input_id.in_(labeled)))
            if release:
                conn.execute(delete(leases).where(mine, leases.c.input_id == release, leases.c.holder == holder))
            held: dict[str, str] = dict(map(tuple, conn.execute(select(leases.c.input_id, leases.c.holder).where(mine))))
            others = sum(1 for h in held.values() if h != holder)
            own = sorted(i for i, h in held.items() if h == holder and i not in skip)
            if own:
                input_id = own[0]
                conn.execute(update(leases).where(mine, leases.c.input_id == input_id).values(expires_at=expires))
            else:
                taken = [i for i, h in held.items() if h != holder] + sorted(skip)
                free = select(queue.c.input_id).where(queue.c.app_id == app_id, queue.c.state == QUEUED)
                if taken:
                    free = free.where(queue.c.input_id.notin_(taken))
                input_id = conn.execute(free.order_by(queue.c.seq).limit(1)).scalar_one_or_none()
                if input_id is None:
                    return None, None, others
                conn.execute(insert(leases).values(app_id=app_id, input_id=input_id, holder=holder, expires_at=expires))
            row = conn.execute(select(queue).where(and_(queue.c.app_id == app_id, queue.c.input_id == input_id))).mappings().one()
        return dict(row, queued_at=_aware(row["queued_at"])), expires, others


__all__ = ["DEFAULT_LEASE_S", "LEASE_RANGE_S", "QueueLeases", "leases"]
