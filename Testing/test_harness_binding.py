"""The Qt binding under the panel tests keeps its references: a leaking one aborts the interpreter mid-suite."""
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from slicer_harness.binding import check_signal_refcounts  # noqa: E402


def test_installed_binding_keeps_references_across_many_emits():
    check_signal_refcounts(emits=2000)


def test_a_binding_that_drops_references_is_refused_by_name(monkeypatch):
    real_getrefcount, calls = sys.getrefcount, []

    def leaking_getrefcount(value):  # the second reading of each pair sees every emit's reference gone
        calls.append(value)
        return real_getrefcount(value) - (20 if len(calls) % 2 == 0 else 0)

    monkeypatch.setattr(sys, "getrefcount", leaking_getrefcount)
    try:
        check_signal_refcounts(emits=20)
    except RuntimeError as error:
        assert "loses a reference to True" in str(error) and "PySide6-Essentials" in str(error)
    else:
        raise AssertionError("a leaking binding was accepted")
