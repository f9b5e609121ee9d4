"""The error types for problems a user can cause and fix."""
from __future__ import annotations


class PGLError(Exception):
    """Bad input or setting: the message names the file, folder or option and says what to do."""


class DiskFull(PGLError):
    """A write failed for lack of space; the message names the folder and about how much is needed."""


class TrainingInterrupted(PGLError):
    """The user stopped a run (Ctrl-C / SIGTERM); a checkpoint was saved first."""

    def __init__(self, message: str, checkpoint: str | None = None, step: int = 0):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.step = step
