"""The Qt binding under the harness: PySide6 (installs and runs on every Python here; PySide2 5.13, the only
Qt 5 build PyPI has for Python 3.11, crashes beside numpy 2), PySide2 where it is the one installed."""
try:
    from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets  # noqa: F401
except ImportError:
    from PySide2 import QtCore, QtGui, QtUiTools, QtWidgets  # noqa: F401
