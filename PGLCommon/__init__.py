"""Slicer-side code shared by the PGL Pretrain and PGL Segmentation modules (one copy, not two).

Only the dependency installer and the panels' shared plumbing (panel.py: .ui loading, dialogs) touch `slicer`
application APIs; job running, job chains and the job state machine are plain Python, field binding needs no Qt,
and the MRML helpers need only MRML (the PyPI slicer-core package is enough). A user's mistake raises
errors.UserError in both modules.
"""
