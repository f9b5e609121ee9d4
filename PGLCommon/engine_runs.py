"""Start engine jobs for the module logics and turn their outcome into results or clear errors."""
from __future__ import annotations

from typing import Callable

from .jobs import EngineJob, engine_command, engine_environment


class EngineError(RuntimeError):
    """The engine reported a failure; the message is the engine's own."""


def start_engine(command: str, args: list, device: str = "auto", job_class: type = EngineJob) -> EngineJob:
    return job_class(engine_command(command, args), env=engine_environment(device)).start()


def wait_for(job: EngineJob, on_event: Callable[[dict], None] | None = None, timeout: float | None = None) -> dict:
    """Block until the job ends; return its `done` event or raise EngineError with the engine's message."""
    result = {}

    def collect(event: dict) -> None:
        if event.get("event") == "done":
            result.update(event)
        if on_event:
            on_event(event)

    code = job.wait(collect, timeout)
    if code != 0:
        raise EngineError("cancelled" if job.cancelled else job.failure_message())
    return result
