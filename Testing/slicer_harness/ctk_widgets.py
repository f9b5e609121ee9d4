"""Stand-ins for the CTK widgets the .ui files use, with the property and signal names of CTK's headers
(Libs/Widgets/ctkCollapsibleButton.h, ctkPathLineEdit.h). Their look is Qt's, not CTK's."""
from __future__ import annotations

import sys
import types

from .binding import QtCore, QtWidgets

from .pythonqt import DesignerProperties, PythonQtObject, register_custom_widget


@register_custom_widget
class ctkCollapsibleButton(DesignerProperties, PythonQtObject, QtWidgets.QGroupBox):
    """A titled container; ctkCollapsibleButton is a QAbstractButton whose `text` is the title."""

    contentsCollapsed = QtCore.Signal(bool)
    PYTHONQT_SIGNALS = {"contentsCollapsed(bool)": lambda self: self.contentsCollapsed}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed = False

    def _text(self):
        return QtWidgets.QGroupBox.title(self)

    def _set_text(self, text):
        QtWidgets.QGroupBox.setTitle(self, text)

    def _is_collapsed(self):
        return self._collapsed

    def setCollapsed(self, collapsed):
        self._collapsed = bool(collapsed)
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
            child.setVisible(not self._collapsed)
        self.contentsCollapsed.emit(self._collapsed)

    text = QtCore.Property(str, _text, _set_text)
    collapsed = QtCore.Property(bool, _is_collapsed, setCollapsed)
    collapsedHeight = QtCore.Property(int, lambda self: 14, lambda self, v: None)


PATH_FILTERS = {"Dirs": 0x001, "Files": 0x002, "Drives": 0x004, "NoSymLinks": 0x008, "AllEntries": 0x007,
                "Readable": 0x010, "Writable": 0x020, "Executable": 0x040, "Modified": 0x080, "Hidden": 0x100,
                "System": 0x200, "AllDirs": 0x400, "CaseSensitive": 0x800, "NoDotAndDotDot": 0x1000,
                "NoDot": 0x2000, "NoDotDot": 0x4000}


@register_custom_widget
class ctkPathLineEdit(DesignerProperties, PythonQtObject, QtWidgets.QWidget):
    """A path line edit with a browse button; `currentPath` is what the user typed or chose."""

    currentPathChanged = QtCore.Signal(str)
    validInputChanged = QtCore.Signal(bool)
    PYTHONQT_SIGNALS = {"currentPathChanged(QString)": lambda self: self.currentPathChanged,
                        "validInputChanged(bool)": lambda self: self.validInputChanged}
    DESIGNER_ENUMS = {"filters": PATH_FILTERS}

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._edit = QtWidgets.QLineEdit(self)
        self._browse = QtWidgets.QToolButton(self)
        self._browse.setText("...")
        layout.addWidget(self._edit)
        layout.addWidget(self._browse)
        self._filters = PATH_FILTERS["AllEntries"]
        self._label = ""
        self._setting_key = ""
        self._edit.textChanged.connect(self.currentPathChanged.emit)
        self._browse.clicked.connect(self.browse)

    def _current_path(self):
        return self._edit.text()

    def setCurrentPath(self, path):
        self._edit.setText(path)

    def browse(self):
        import qt

        if self._filters & PATH_FILTERS["Dirs"] and not self._filters & PATH_FILTERS["Files"]:
            path = qt.QFileDialog.getExistingDirectory(self, self._label or "Choose a folder", self.currentPath)
        else:
            path = qt.QFileDialog.getOpenFileName(self, self._label or "Choose a file", self.currentPath)
            path = path[0] if isinstance(path, tuple) else path
        if path:
            self.setCurrentPath(path)

    currentPath = QtCore.Property(str, _current_path, setCurrentPath, user=True)
    filters = QtCore.Property(int, lambda self: self._filters, lambda self, v: setattr(self, "_filters", int(v)))
    label = QtCore.Property(str, lambda self: self._label, lambda self, v: setattr(self, "_label", v))
    settingKey = QtCore.Property(str, lambda self: self._setting_key,
                                 lambda self, v: setattr(self, "_setting_key", v))
    showBrowseButton = QtCore.Property(bool, lambda self: self._browse.isVisibleTo(self),
                                       lambda self, v: self._browse.setVisible(v))


def install() -> types.ModuleType:
    """Make `import ctk` give the stand-ins."""
    module = types.ModuleType("ctk", __doc__)
    module.ctkCollapsibleButton = ctkCollapsibleButton
    module.ctkPathLineEdit = ctkPathLineEdit
    sys.modules["ctk"] = module
    return module
