"""Synthetic torso CT cohorts: the family defaults are tuned on, and a frozen held-out family for verdicts."""
