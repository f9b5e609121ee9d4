"""What a training run keeps in its output folder: the run lock, the step log, checkpoints, and how a stop leaves
them. Only the main process writes; on the others every write is a no-op (their states are rank 0's)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import TrainingInterrupted
from ..models.store import LOG_FILE, prepare_output_dir, refuse_foreign_output
from ..progress import ProgressCallback, emit
from .checkpoint import save_checkpoint
from .distributed import World
from .run_lock import RunLock
from .step_log import StepLog


class RunFolder:
    def __init__(self, out: Path, stage: str, world: World, progress: ProgressCallback | None = None):
        self.out, self.stage, self.world, self.progress = Path(out), stage, world, progress

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's run lock (rank 0 only: only it writes) after refusing a folder that is not a run's."""
        lock = RunLock(self.out, f"pgl {self.stage}", self.progress) if self.world.is_main else None
        if lock:
            refuse_foreign_output(self.out)
            lock.acquire()
        try:
            yield
        finally:
            if lock:
                lock.release()

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Check (and clear) the folder for a new or resumed run; every process waits for it."""
        if self.world.is_main:
            prepare_output_dir(self.out, resume, overwrite)
        self.world.barrier()

    @contextmanager
    def step_log(self, resume_step: int) -> Iterator[Callable[[dict], None]]:
        """A writer of one step's record to train_log.jsonl, which a resumed run cuts back to `resume_step`."""
        log = StepLog(self.out / LOG_FILE, resume_step) if self.world.is_main else None
        try:
            yield log.write if log else (lambda record: None)
        finally:
            if log:
                log.close()

    def save_checkpoint(self, state: Callable[[], dict], step: int) -> Path:
        """Write `state()` (built on the main process only) as the latest checkpoint; returns its path."""
        if not self.world.is_main:
            return self.out
        path = save_checkpoint(self.out, state())
        emit(self.progress, "checkpoint", step=step, path=str(path))
        return path

    def interrupted(self, step: int, checkpoint: Path, kept: str | None) -> TrainingInterrupted:
        """Report a stop at `step` after its checkpoint, and the error that ends the run; `kept` says what usable
        model the folder holds (falsy: none)."""
        emit(self.progress, "cancelled", step=step, checkpoint=str(checkpoint),
             **({"model_dir": str(self.out)} if kept else {}))
        usable = f" {kept}" if kept else ""
        return TrainingInterrupted(f"stopped at step {step}; checkpoint saved to {checkpoint}.{usable} "
                                   f"Continue with --resume.", str(checkpoint), step)
