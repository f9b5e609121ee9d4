"""Start engine jobs for the module logics and turn their outcome into results or clear errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .jobs import EngineJob, engine_environment


class EngineError(RuntimeError):
    """The engine reported a failure; the message is the engine's own."""


def start_engine(command: str, args: list, device: str = "auto", job_class: type = EngineJob,
                 work: Path | None = None) -> EngineJob:
    """Start `pgl_engine <command>` in its work folder (`work`, made by new_work_folder, or a new one): the folder
    belongs to the job and goes when it is released."""
    return job_class.for_engine(command, args, env=engine_environment(device), work=work).start()


def application_keep_alive() -> Callable[[], None] | None:
    """Inside the Slicer application: slicer.app.processEvents, so a blocking wait keeps the GUI painting."""
    try:
        import slicer
    except ImportError:
        return None
    return getattr(getattr(slicer, "app", None), "processEvents", None)


def wait_for(job: EngineJob, on_event: Callable[[dict], None] | None = None, timeout: float | None = None,
             then: Callable[[dict], Any] | None = None) -> Any:
    """Block until the job ends; return its `done` event, or `then(done event)` read before the job's temporary
    folders are released. Raises EngineError with the engine's message. In Slicer the event loop keeps running
    meanwhile (the window repaints, buttons respond)."""
    result = {}

    def collect(event: dict) -> None:
        if event.get("event") == "done":
            result.update(event)
        if on_event:
            on_event(event)

    try:
        code = job.wait(collect, timeout, keep_alive=application_keep_alive())
        if getattr(job, "error", None) is not None:  # a StagedJob's own work failed (e.g. a NodeError)
            raise job.error
        if code != 0:
            raise EngineError("cancelled" if job.cancelled else job.failure_message())
        return then(result) if then else result
    finally:
        job.release()
