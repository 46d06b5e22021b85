"""Pick a ``VectorStore`` twin from a URL (``SearchSettings.vector_store_url``)."""

from __future__ import annotations

from firstlight.search.vector_store import VectorStore

_SCHEMES = "edge:///abs/path, edge://rel/path, memory://, http(s)://host:6333, qdrant-local:///path"


def _path_after(url: str, scheme: str) -> str:
    # Not urlparse: "edge://relative/path" would put "relative" in the netloc.
    path = url[len(scheme) + 3 :]
    if not path:
        raise ValueError(f"vector store URL {url!r} lacks a path")
    return path


def open_vector_store(url: str) -> VectorStore:
    """``edge://DIR`` → QdrantEdgeStore (embedded, on disk); ``memory://`` → in-process, lost on exit;
    ``http(s)://…`` → a Qdrant server; ``qdrant-local://DIR`` → qdrant_client's local mode on disk."""
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"vector store URL {url!r} has no scheme; expected one of: {_SCHEMES}")
    # Imports are deferred so a deployment using one engine never loads the other.
    if scheme == "edge":
        from firstlight.search.qdrant_edge_store import QdrantEdgeStore

        return QdrantEdgeStore(_path_after(url, scheme))
    if scheme == "memory":
        from firstlight.search.qdrant_client_store import QdrantClientStore

        return QdrantClientStore(":memory:")
    if scheme in ("http", "https"):
        from firstlight.search.qdrant_client_store import QdrantClientStore

        return QdrantClientStore(url=url)
    if scheme == "qdrant-local":
        from firstlight.search.qdrant_client_store import QdrantClientStore

        return QdrantClientStore(path=_path_after(url, scheme))
    raise ValueError(f"unknown vector store URL scheme {scheme!r} in {url!r}; expected one of: {_SCHEMES}")
