"""InferenceService: Predict with models served by Triton (built in: `general`)."""
