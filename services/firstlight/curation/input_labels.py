"""The inputs' labels and split as curation knows them (tables ``curation_input_labels`` and
``curation_input_concepts``): ScorePool records the pool's states as it reads them, and each
``annotations.changed`` event records the input's new state; a state older than the stored one
(a lower label_revision: events and reads can cross) is ignored. They let the gallery's label
and split filters join the prediction filters in one query, and the pool's labeling source
lease only unlabeled inputs. Callers hold the store's write lock. No grpc here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, exists, false, insert, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from firstlight.curation.ports import LabelState
from firstlight.curation.store import input_concepts, input_labels

CHUNK = 500


def record(conn: Connection, app_id: str, states: Iterable[LabelState]) -> None:
    """Store each state unless a newer revision is stored (the same revision again: rewritten)."""
    latest: dict[str, LabelState] = {}
    for s in states:  # the newest of several states of one input in a batch
        if s.input_id not in latest or s.revision >= latest[s.input_id].revision:
            latest[s.input_id] = s
    lab, con = input_labels.c, input_concepts.c
    states_now = list(latest.values())
    for start in range(0, len(states_now), CHUNK):
        chunk = states_now[start : start + CHUNK]
        ids = [s.input_id for s in chunk]
        stored = dict(conn.execute(select(lab.input_id, lab.label_revision).where(lab.app_id == app_id, lab.input_id.in_(ids))).tuples().all())
        fresh = [s for s in chunk if s.revision >= stored.get(s.input_id, -1)]
        if not fresh:
            continue
        fresh_ids = [s.input_id for s in fresh]
        conn.execute(delete(input_labels).where(lab.app_id == app_id, lab.input_id.in_(fresh_ids)))
        conn.execute(delete(input_concepts).where(con.app_id == app_id, con.input_id.in_(fresh_ids)))
        conn.execute(
            insert(input_labels),
            [{"app_id": app_id, "input_id": s.input_id, "split": s.split, "labeled": bool(s.concepts), "label_revision": s.revision} for s in fresh],
        )
        pairs = [{"app_id": app_id, "input_id": s.input_id, "concept": c} for s in fresh for c in set(s.concepts)]
        if pairs:
            conn.execute(insert(input_concepts), pairs)


def matching(app_id: str, input_id: ColumnElement[Any], concepts: Sequence[str] = (), split: int = 0, labeled: bool | None = None) -> list[ColumnElement[bool]]:
    """Where-clauses keeping the rows whose ``input_id`` has any of ``concepts``, is in
    ``split`` and is labeled (or not). An input with no recorded state matches no filter."""
    lab, con = input_labels.c, input_concepts.c
    out: list[ColumnElement[bool]] = []
    if concepts:
        out.append(exists().where(con.app_id == app_id, con.input_id == input_id, con.concept.in_(list(concepts))))
    state = [lab.app_id == app_id, lab.input_id == input_id]
    if split:
        state.append(lab.split == split)
    if labeled is not None:
        state.append(lab.labeled == (true() if labeled else false()))
    if len(state) > 2:
        out.append(exists().where(*state))
    return out


__all__ = ["matching", "record"]
