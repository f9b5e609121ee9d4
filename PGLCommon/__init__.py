"""Slicer-side code shared by the PGL Pretrain and PGL Segmentation modules (one copy, not two).

Only the dependency installer touches `slicer` application APIs; job running and the job state machine are
plain Python, and the MRML helpers need only MRML (the PyPI slicer-core package is enough).
"""
