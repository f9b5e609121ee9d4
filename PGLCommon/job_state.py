"""The widgets' state machine, free of Qt so it is tested on its own.

idle --start--> running --cancel--> cancelling --exit--> idle (checkpoint kept)
running --exit 0--> done;  running/cancelling --exit != 0--> failed (engine message kept);
done / failed --start--> running.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# CONFIGURATION_CHOSEN: the start of the engine's info line on what it chose for the machine and the time budget
# (pgl_engine.finetuning.budget_choice): shown as the status as soon as it arrives, before training starts, until
# the first training step reports
from pgl_engine.contract import CONFIGURATION_CHOSEN, EXIT_CANCELLED

IDLE, RUNNING, CANCELLING, DONE, FAILED = "idle", "running", "cancelling", "done", "failed"


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class JobState:
    """What the GUI shows: state, button, progress bar and status text, log lines, the last result."""

    state: str = IDLE
    step: int = 0
    total: int = 0
    stage: str = ""
    status: str = ""
    message: str = ""
    result: dict = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    dice: float | None = None  # the latest validation Dice of a fine-tuning (else its training Dice is shown)

    @property
    def busy(self) -> bool:
        return self.state in (RUNNING, CANCELLING)

    @property
    def button_text(self) -> str:
        return {RUNNING: "Cancel", CANCELLING: "Cancelling..."}.get(self.state, "Start")

    @property
    def button_enabled(self) -> bool:
        return self.state != CANCELLING

    @property
    def progress_percent(self) -> int:
        return int(100 * self.step / self.total) if self.total else 0

    def start(self) -> None:
        if self.busy:
            raise RuntimeError(f"a job is already {self.state}")
        self.state, self.step, self.total, self.stage, self.message, self.result = RUNNING, 0, 0, "", "", {}
        self.status = "starting..."
        self.log, self.dice = [], None

    def request_cancel(self) -> bool:
        """True if a cancel should be sent now (only once, only while running)."""
        if self.state != RUNNING:
            return False
        self.state = CANCELLING
        self.status = "cancelling: saving a checkpoint..."
        return True

    def on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.stage, self.step, self.total = event.get("stage", ""), event.get("step", 0), event.get("total", 0)
            parts = [f"{self.stage} {self.step}/{self.total}"]
            if isinstance(event.get("loss"), (int, float)):
                parts.append(f"loss {event['loss']:.3f}")
            if isinstance(event.get("val_dice"), (int, float)) and event["val_dice"] == event["val_dice"]:
                self.dice = float(event["val_dice"])  # shown until the next validation
            if self.dice is not None:
                parts.append(f"validation Dice {self.dice:.3f}")
            elif isinstance(event.get("train_dice"), (int, float)) and event["train_dice"] == event["train_dice"]:
                parts.append(f"training Dice {event['train_dice']:.3f}")  # on the patches it learns from
            if isinstance(event.get("eta_s"), (int, float)) and event["eta_s"] == event["eta_s"]:
                parts.append(f"ETA {format_seconds(event['eta_s'])}")
            if self.state == RUNNING:
                self.status = ", ".join(parts)
        elif kind in ("warning", "info", "log"):
            self.log.append(f"{kind}: {event.get('message', '')}" if kind != "log" else event.get("message", ""))
            message = str(event.get("message", ""))
            if kind == "info" and message.startswith(CONFIGURATION_CHOSEN) and self.state == RUNNING:
                self.status = message[:1].upper() + message[1:]
        elif kind == "error":
            self.message = event.get("message", "")
            self.log.append(f"error: {self.message}")
        elif kind == "done":
            self.result = event
        elif kind == "cancelled":
            self.result = event

    def finish(self, exit_code: int, failure_message: str = "") -> None:
        if exit_code == 0:
            self.state, self.status = DONE, "done"
        elif exit_code == EXIT_CANCELLED or self.state == CANCELLING:
            checkpoint = self.result.get("checkpoint")
            self.state = IDLE
            if self.result.get("model_dir"):
                self.status = f"stopped at step {self.result.get('step', '?')}; the model so far is kept and listed"
            else:
                self.status = "cancelled" + (f"; checkpoint kept: {checkpoint}" if checkpoint else "")
        else:
            self.state = FAILED
            self.message = self.message or failure_message
            self.status = f"failed: {self.message}"
