"""The closest thing to Slicer that installs from PyPI: a real Qt event loop (PySide6, offscreen), the real
.ui files through Qt's QUiLoader, a `qt` module with PythonQt's semantics, CTK and qMRML stand-ins bound to a
real MRML scene (slicer-core), slicer-core's own `slicer.util` (loadUI, childWidgetVariables, findChildren,
WaitCursor...), and `slicer.app` with settings in a temporary file. Dialogs are recorded instead of shown.

What it cannot show: real CTK / qMRML widget behaviour beyond the names and rules mirrored here, PythonQt's
threading (Slicer runs Python threads only while the main thread runs Python), packaging and the launcher.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from .binding import QtCore, QtWidgets, check_signal_refcounts  # noqa: E402

from . import ctk_widgets, mrml_widgets, pythonqt, scripted_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DIALOGS = ("errorDisplay", "warningDisplay", "infoDisplay", "confirmOkCancelDisplay", "confirmYesNoDisplay",
           "delayDisplay")


class Heartbeat:
    """A 10 ms timer; the longest gap between its ticks is the longest the event loop stalled. The first gap runs
    from start() and the last one up to stop(), so work done right after start (a click's slot) or right before stop
    (what a job's end does) counts too."""

    def __init__(self, interval_ms: int = 10):
        self.timer = QtCore.QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.longest_ms = 0.0

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.longest_ms = max(self.longest_ms, (now - self.last) * 1000)
        self.last = now

    def start(self):
        self.last, self.longest_ms = time.perf_counter(), 0.0
        self.timer.start()
        return self

    def stop(self) -> float:
        self._tick()
        self.timer.stop()
        self.last = None
        return self.longest_ms


class ModuleManager:
    """slicer.app.moduleManager(): PythonQt-style connect/disconnect of its signals (recorded)."""

    def __init__(self):
        self.connections = []

    def connect(self, signature, slot):
        self.connections.append((signature, slot))
        return True

    def disconnect(self, signature, slot):
        self.connections = [c for c in self.connections if c != (signature, slot)]
        return True


class SlicerApplication:
    """`slicer.app` as the modules and slicer.util use it."""

    applicationName = "Slicer"

    def __init__(self, settings_file: Path, temporary: Path):
        import qt

        self._settings = qt.QSettings(str(settings_file), qt.QSettings.IniFormat)
        self._module_manager = ModuleManager()
        self.temporaryPath = str(temporary)

    def settings(self):
        return self._settings

    userSettings = settings

    def processEvents(self, *args):
        QtWidgets.QApplication.processEvents(*args)

    def testingEnabled(self) -> bool:
        return False

    def topLevelWidgets(self):
        return QtWidgets.QApplication.topLevelWidgets()

    def layoutManager(self):
        return None

    def moduleManager(self):
        return self._module_manager


class SlicerHarness:
    """One test's Slicer: scene, app, recorded dialogs, loaded modules, slot exceptions."""

    def __init__(self, tmp_path: Path):
        pythonqt.install()
        ctk_widgets.install()
        import qt
        import slicer

        from mrml_harness import MRMLHarness

        self.qapp = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["slicer-harness"])
        check_signal_refcounts()
        QtCore.QSettings.setDefaultFormat(QtCore.QSettings.IniFormat)
        QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(tmp_path / "settings"))
        scripted_module.install()
        self.slicer, self.qt = slicer, qt
        self.mrml = MRMLHarness()
        self.scene = self.mrml.scene
        self.saved = {name: getattr(slicer.util, name) for name in DIALOGS}
        self.saved_app = getattr(slicer, "app", None)
        slicer.app = SlicerApplication(tmp_path / "slicer.ini", tmp_path)
        slicer.qMRMLWidget = mrml_widgets.qMRMLWidget
        slicer.qMRMLNodeComboBox = mrml_widgets.qMRMLNodeComboBox
        self.dialogs: list[tuple[str, str, str]] = []  # (function, window title, text)
        self.confirm_answer = True
        self.folder_answers: list[str] = []
        for name in DIALOGS:
            setattr(slicer.util, name, self._recorder(name))
        qt.QFileDialog.getExistingDirectory = staticmethod(self._choose_folder)
        self.slot_errors: list[str] = []
        self._excepthook = sys.excepthook
        sys.excepthook = self._record_slot_error
        self.frames, self.widgets = [], []

    # --- what the user would see -----------------------------------------------------------------------
    def _recorder(self, name):
        def record(text, windowTitle=None, *args, **kwargs):
            self.dialogs.append((name, windowTitle or "", str(text)))
            if name.startswith("confirm"):
                return self.confirm_answer
            if name == "delayDisplay":
                self.process_events()
            return None

        return record

    def _choose_folder(self, *args, **kwargs):
        return self.folder_answers.pop(0) if self.folder_answers else ""

    def _record_slot_error(self, kind, value, tb):
        import traceback

        self.slot_errors.append("".join(traceback.format_exception(kind, value, tb)))

    def shown(self, kind: str = "errorDisplay") -> list[str]:
        return [text for name, _, text in self.dialogs if name == kind]

    # --- modules ---------------------------------------------------------------------------------------
    def load_module(self, name: str, size=(460, 760)):
        """Import <name>.py as Slicer does, construct the module and its widget in a shown panel, call setup()."""
        import slicer

        path = ROOT / name / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        setattr(slicer.modules, name.lower(), SimpleNamespace(path=str(path)))
        getattr(module, name)(SimpleNamespace(path=str(path)))
        frame = slicer.qMRMLWidget()
        frame.setLayout(self.qt.QVBoxLayout())
        frame.setMRMLScene(self.scene)
        widget = getattr(module, f"{name}Widget")(frame)
        widget.setup()
        frame.layout().addStretch(1)
        frame.resize(*size)
        frame.show()
        self.frames.append(frame)
        self.widgets.append(widget)
        self.process_events()
        return widget

    # --- the event loop --------------------------------------------------------------------------------
    def process_events(self, seconds: float = 0.0):
        end = time.monotonic() + seconds
        while True:
            self.qapp.processEvents()
            if time.monotonic() >= end:
                return
            time.sleep(0.005)

    def wait_until(self, condition, timeout_s: float = 120.0, what: str = "condition"):
        """Run the event loop until condition() is true; fail after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            self.qapp.processEvents()
            time.sleep(0.005)

    def close_scene(self):
        """File > Close Scene."""
        self.scene.Clear(0)
        self.process_events()

    def render(self, widget, path: Path) -> Path:
        """The panel as the user sees it, to PNG."""
        self.process_events()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not widget.grab().save(str(path)):
            raise OSError(f"could not write {path}")
        return path

    def close(self):
        for widget in self.widgets:
            widget.cleanup()
        self.process_events()
        for frame in self.frames:
            frame.hide()
            frame.deleteLater()
        self.process_events()
        sys.excepthook = self._excepthook
        for name, function in self.saved.items():
            setattr(self.slicer.util, name, function)
        self.slicer.app = self.saved_app
        self.mrml.close()
