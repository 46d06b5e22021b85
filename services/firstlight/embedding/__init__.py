"""EmbeddingService: image embeddings through Triton, text embeddings with MiniLM."""
