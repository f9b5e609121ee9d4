"""Segmenting scans (sliding window, labels back on the input grid), its time estimate, and scoring."""
