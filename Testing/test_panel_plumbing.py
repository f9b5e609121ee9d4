"""What the two panels share (PGLCommon): jobs chained into one (Refine's phases), fields bound to parameters, and
the one place a job's start is tried and a user's mistake shown."""
import re
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from PGLCommon.errors import UserError
from PGLCommon.job_chain import JobChain
from PGLCommon.panel_fields import Field, read_fields, write_fields

ROOT = Path(__file__).resolve().parents[1]


class FakeJob:
    """Ends after `polls` polls with `code`; says `done` (with `name`) when it ends well."""

    def __init__(self, name, code=0, polls=2):
        self.name, self.code, self.polls = name, code, polls
        self.released = self.cancelled = False
        self.engine, self.args = f"{name} engine", [name]

    def poll(self, *args):
        self.polls -= 1
        if self.polls > 0:
            return [{"event": "progress", "stage": self.name}]
        return [{"event": "done", "name": self.name}] if self.code == 0 else [{"event": "error", "message": "no"}]

    def finished(self):
        return self.polls <= 0 or self.cancelled

    @property
    def exit_code(self):
        return (130 if self.cancelled else self.code) if self.finished() else None

    def failure_message(self):
        return "" if self.code == 0 else f"{self.name} failed"

    def cancel(self, grace_s=None):
        self.cancelled = True

    def release(self):
        self.released = True


class Chain(JobChain):
    def __init__(self, jobs):
        self.jobs, self.seen = jobs, []
        super().__init__(jobs.pop(0))

    def next_job(self, finished, done):
        self.seen.append(done.get("name"))
        if self.jobs and self.jobs[0] == "raise":
            raise UserError("the next phase cannot start")
        return self.jobs.pop(0) if self.jobs else None


def run(chain):
    events = []
    while not chain.finished():
        events += chain.poll()
    return events


def test_a_chain_runs_its_jobs_one_after_another_as_one_job():
    first, second = FakeJob("train"), FakeJob("segment")
    chain = Chain([first, second])
    assert chain.engine == "train engine" and chain.args == ["train"]  # the current job's, for the panel and tests
    events = run(chain)
    assert chain.exit_code == 0 and chain.seen == ["train", "segment"]
    assert [e["event"] for e in events] == ["progress", "done", "progress", "done"]  # every phase's events
    assert first.released and not second.released  # each phase's folders go when the next starts ...
    chain.release()
    assert second.released  # ... the last one's with the chain


def test_a_failing_phase_ends_the_chain_with_its_message_and_no_next_phase():
    failing, never = FakeJob("train", code=1), FakeJob("segment")
    chain = Chain([failing, never])
    run(chain)
    assert chain.exit_code == 1 and chain.failure_message() == "train failed" and chain.seen == []
    chain = Chain([FakeJob("train"), "raise"])
    run(chain)
    assert chain.exit_code == 1 and chain.failure_message() == "the next phase cannot start"
    assert isinstance(chain.error, UserError)  # wait_for raises it as it is


def test_cancel_stops_the_current_phase_and_starts_no_other():
    first, second = FakeJob("train", polls=5), FakeJob("segment")
    chain = Chain([first, second])
    chain.poll()
    chain.cancel()
    run(chain)
    assert first.cancelled and chain.exit_code == 130 and chain.failure_message() == "cancelled" and not chain.seen
    assert chain.wait() == 130  # and a finished chain waits for nothing


def test_fields_read_and_write_widget_properties_tuples_and_choices():
    ui = types.SimpleNamespace(path=types.SimpleNamespace(currentPath="/data"), box=types.SimpleNamespace(value=3),
                               x=types.SimpleNamespace(value=1), y=types.SimpleNamespace(value=2),
                               z=types.SimpleNamespace(value=3),
                               combo=types.SimpleNamespace(currentText="CPU", currentIndex=1))
    fields = {"folder": Field("path", "currentPath"), "steps": Field("box"), "size": Field(("x", "y", "z")),
              "device": Field("combo", choices={"Auto": "auto", "CPU": "cpu"})}
    assert read_fields(ui, fields) == {"folder": "/data", "steps": 3, "size": (1, 2, 3), "device": "cpu"}
    write_fields(ui, fields, {"steps": 7, "size": (4, 5, 6), "device": "auto", "unbound": 1})
    assert (ui.box.value, ui.x.value, ui.y.value, ui.z.value, ui.combo.currentIndex) == (7, 4, 5, 6, 0)
    assert ui.path.currentPath == "/data"  # not in the values: left as it is


@pytest.mark.parametrize("module", ["PGLPretrain", "PGLSegmentation"])
def test_every_bound_field_and_monitor_widget_exists_in_the_ui_file(module):
    source = "".join(p.read_text() for p in (ROOT / module / f"{module}Lib").glob("*.py"))
    declared = {w.get("name") for w in ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui").iter("widget")}
    bound = set(re.findall(r'Field\(\(?"(\w+)"(?:, "(\w+)", "(\w+)")?', source))
    names = {n for group in bound for n in group if n}
    prefixes = re.findall(r'job_monitor\("(\w+)"', source)
    names |= {f"{p}{part}" for p in prefixes for part in ("ProgressBar", "StatusLabel", "LogTextEdit")}
    assert names and names <= declared, f"missing in the .ui file: {sorted(names - declared)}"
