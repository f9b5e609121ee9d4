"""The Qt binding under the harness: PySide6 (installs and runs on every Python here; PySide2 5.13, the only
Qt 5 build PyPI has for Python 3.11, crashes beside numpy 2), PySide2 where it is the one installed."""
import sys

try:
    import PySide6 as binding
    from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets  # noqa: F401
except ImportError:
    import PySide2 as binding
    from PySide2 import QtCore, QtGui, QtUiTools, QtWidgets  # noqa: F401


def check_signal_refcounts(emits: int = 20) -> None:
    """Refuse a binding whose signal emission drops references to the values it carries.

    PySide6 6.12.0 releases one reference to True/False on every bool emit; a panel test emits thousands, and the
    interpreter then aborts ("bool_dealloc: deallocating True or False") far from the cause."""

    class Probe(QtCore.QObject):
        flag = QtCore.Signal(bool)
        value = QtCore.Signal(object)

    probe = Probe()
    probe.flag.connect(lambda _: None)
    probe.value.connect(lambda _: None)
    for signal, carried in ((probe.flag, True), (probe.value, True), (probe.value, None)):
        before = sys.getrefcount(carried)
        for _ in range(emits):
            signal.emit(carried)
        lost = before - sys.getrefcount(carried)
        if lost >= emits // 2:
            raise RuntimeError(f"{binding.__name__} {binding.__version__} loses a reference to {carried!r} on every "
                               "signal emit and would crash the harness; install another version (pyproject.toml "
                               "pins a working range of PySide6-Essentials)")
