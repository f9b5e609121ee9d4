"""Networks, model files (read without running code), their metadata, and what a model has learnt."""
