"""IngestionService: apps, inputs, concepts and labels."""
