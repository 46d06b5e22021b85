"""SearchService internals: the vector-store adapter (``vector_store`` + its twins)."""
