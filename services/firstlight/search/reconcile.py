"""The index's labels and deletions, brought back in step with ingestion's durable state after the
broker lost its records (docs/reliability.md, "What a broker restart loses").

``annotations.changed`` and ``inputs.deleted`` records that a memory broker held when it restarted,
not yet consumed, are gone, and nothing confirms them (unlike ``inputs.ingested``, which ingestion
watches until ``inputs.indexed`` confirms it). The rule: when search sees the broker lose its state
(a consumer's committed offsets went back, or its producer was replaced after a fatal error), it
compares its index with ingestion's inputs, app by app, and

* deletes every point whose input ingestion no longer has (a lost deletion);
* applies ingestion's labels to every input whose index revision is older (a lost label change),
  parking them like any early label change when the point is not indexed yet.

Ingestion's rows are the truth and both fixes are idempotent, so records that were not lost, or
arrive later, change nothing (labels carry revisions; deleting twice is a no-op). The index is read
before ingestion is listed: a point indexed before the listing has its input row committed before
(ingestion writes the row with its announcement), so an input is never taken for deleted because
it was created during the reconcile.

The comparison (:func:`plan`) is pure; :class:`Reconciler` runs it in its own thread, once per
broker loss, retrying with backoff while ingestion or the vector store is down."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from firstlight.runtime.retry import Backoff
from firstlight.search.indexing import Index, Labels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputLabels:
    """One input's label state as ingestion stores it."""

    input_id: str
    concepts: Sequence[str]
    split: int
    label_revision: int
    generation: int = 0  # the incarnation ingestion holds (domain.generations): a relabel must carry it


@dataclass(frozen=True)
class Plan:
    delete: list[str] = field(default_factory=list)
    relabel: list[InputLabels] = field(default_factory=list)


def plan(indexed: Mapping[str, int], current: Iterable[InputLabels]) -> Plan:
    """What brings one app's index (input id -> label revision of its points) in step with
    ingestion's ``current`` inputs: the points to delete and the labels to apply (newer than the
    index's; for inputs not indexed yet, any labelled revision, to be parked)."""
    by_id = {c.input_id: c for c in current}
    return Plan(
        delete=sorted(i for i in indexed if i not in by_id),
        relabel=[c for i, c in sorted(by_id.items()) if c.label_revision > indexed.get(i, 0)],
    )


class LabelSource(Protocol):
    """Ingestion's inputs of an app, as :class:`InputLabels` (``search.peers.IngestionInputs``)."""

    async def labels(self, app_id: str) -> list[InputLabels] | None:
        """Every input of the app; None if ingestion does not know the app."""

    async def close(self) -> None: ...


@dataclass
class Outcome:
    apps: int = 0
    deleted: int = 0
    relabeled: int = 0
    skipped_apps: list[str] = field(default_factory=list)


async def reconcile(index: Index, source: LabelSource) -> Outcome:
    """One pass over every app in the index (raises while a peer is down: the caller retries)."""
    indexed = index.label_revisions()  # first: see the module's note on ordering
    out = Outcome()
    for app_id in sorted(indexed):
        current = await source.labels(app_id)
        if current is None:  # apps are never deleted: an unknown app is a wrong peer, not a deletion
            out.skipped_apps.append(app_id)
            continue
        fix = plan(indexed[app_id], current)
        if fix.delete:
            index.delete(app_id, fix.delete)
        for c in fix.relabel:
            index.set_labels(Labels(app_id, c.input_id, list(c.concepts), c.split, c.label_revision, c.generation))
        out.apps += 1
        out.deleted += len(fix.delete)
        out.relabeled += len(fix.relabel)
    return out


class Reconciler:
    """Runs :func:`reconcile` in its own thread after each :meth:`request` (requests that come
    while one runs fold into one more pass), until it succeeds."""

    def __init__(self, index: Index, source_factory: Callable[[], LabelSource], backoff: Backoff | None = None) -> None:
        self.index = index
        self.source_factory = source_factory
        self.backoff = backoff or Backoff(1.0, 30.0)
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-reconciler", daemon=True)
        self.runs = 0
        self.last: Outcome | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wanted.set()
        self._thread.join(timeout)

    def request(self, reason: str = "") -> None:
        """The broker lost its state (called from a consumer or producer thread)."""
        log.warning("search: broker lost its state (%s): reconciling labels and deletions with ingestion", reason or "unknown")
        self._wanted.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wanted.wait()
            if self._stop.is_set():
                return
            self._wanted.clear()
            try:
                self.last = asyncio.run(self._once())
            except Exception as exc:  # noqa: BLE001 - ingestion or the store is down: try again
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = self.backoff.next()
                log.warning("search: reconcile failed (%s); retrying in %.1fs", self.last_error, delay)
                self._wanted.set()
                self._stop.wait(delay)
                continue
            self.backoff.reset()
            self.last_error = None
            self.runs += 1
            log.warning(
                "search: reconciled %d app(s) with ingestion: %d point(s) of deleted inputs removed, %d label state(s) applied%s",
                self.last.apps, self.last.deleted, self.last.relabeled,
                f"; apps unknown to ingestion left as they are: {self.last.skipped_apps}" if self.last.skipped_apps else "",
            )  # fmt: skip

    async def _once(self) -> Outcome:
        source = self.source_factory()  # its channel belongs to this pass's event loop
        try:
            return await reconcile(self.index, source)
        finally:
            await source.close()
