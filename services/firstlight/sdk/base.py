"""What every service's calls share: the stubs, the timeout and the retry policy of one client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from firstlight.clients.policy import DEFAULT_DEADLINE_S, RetryPolicy, deadline_for


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


P = TypeVar("P", bound=_Page)


def pages(fetch: Callable[[str], P]) -> Iterator[P]:
    """Every page of a listing: ``fetch(page_token)`` from the first page (token "") until a
    page's ``next_page_token`` is empty."""
    token = ""
    while True:
        page = fetch(token)
        yield page
        token = page.next_page_token
        if not token:
            return


class ServiceCalls:
    """State set by :class:`firstlight.sdk.Firstlight`; each service's calls are a subclass.

    The stubs are :class:`~firstlight.sdk.transport.RetryingStub` (typed ``Any``: generated stubs
    carry no method types). ``training``/``curation``/``embedding`` are None when the client was
    given no address for them."""

    ingestion: Any
    auth: Any
    search: Any
    inference: Any
    training: Any
    curation: Any
    embedding: Any
    retry: RetryPolicy
    timeout_s: float

    def _deadline(self, rpc: str) -> float:
        """The clients' deadline for ``rpc`` (:mod:`firstlight.clients.policy`), scaled by this
        client's ``timeout_s`` (60 s by default: the policy's own)."""
        return deadline_for(rpc) * self.timeout_s / DEFAULT_DEADLINE_S

    def _training(self) -> Any:
        if self.training is None:
            raise ValueError("this client has no training service address")
        return self.training

    def _curation(self) -> Any:
        if self.curation is None:
            raise ValueError("this client has no curation service address (Firstlight(..., curation=...))")
        return self.curation
