"""Stand-ins for the qMRML widgets the .ui files use, bound to a real (slicer-core) MRML scene, with the property,
signal and slot names of Slicer's headers (Libs/MRML/Widgets/qMRMLWidget.h, qMRMLNodeComboBox.h) and the node
filtering rules of qMRMLSortFilterProxyModel: `nodeTypes`, `showChildNodeTypes` (true by default, so a scalar
volume selector also lists label maps), `hideChildNodeTypes`, `showHidden`, `noneEnabled`."""
from __future__ import annotations

from .binding import QtCore, QtWidgets

from .pythonqt import DesignerProperties, PythonQtObject, register_custom_widget


@register_custom_widget
class qMRMLWidget(DesignerProperties, PythonQtObject, QtWidgets.QWidget):
    mrmlSceneChanged = QtCore.Signal(object)
    PYTHONQT_SIGNALS = {"mrmlSceneChanged(vtkMRMLScene*)": lambda self: self.mrmlSceneChanged}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene):
        if scene is not self._scene:
            self._scene = scene
            self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


def _string_list_property(attribute: str):
    def read(self):
        return list(getattr(self, attribute))

    def write(self, values):
        setattr(self, attribute, [str(v) for v in values])
        self._refresh()

    return QtCore.Property("QStringList", read, write)


def _bool_property(attribute: str, refresh: bool = True):
    def read(self):
        return getattr(self, attribute)

    def write(self, value):
        setattr(self, attribute, bool(value))
        if refresh:
            self._refresh()

    return QtCore.Property(bool, read, write)


SCENE_EVENTS = ("NodeAddedEvent", "NodeRemovedEvent", "EndCloseEvent", "EndBatchProcessEvent", "EndImportEvent")


@register_custom_widget
class qMRMLNodeComboBox(DesignerProperties, PythonQtObject, QtWidgets.QWidget):
    currentNodeChanged = QtCore.Signal((object,), (bool,))
    currentNodeIDChanged = QtCore.Signal(str)
    nodeAdded = QtCore.Signal(object)
    nodeAboutToBeRemoved = QtCore.Signal(object)
    PYTHONQT_SIGNALS = {"currentNodeChanged(vtkMRMLNode*)": lambda self: self.currentNodeChanged[object],
                        "currentNodeChanged(bool)": lambda self: self.currentNodeChanged[bool],
                        "currentNodeIDChanged(QString)": lambda self: self.currentNodeIDChanged,
                        "nodeAdded(vtkMRMLNode*)": lambda self: self.nodeAdded,
                        "nodeAboutToBeRemoved(vtkMRMLNode*)": lambda self: self.nodeAboutToBeRemoved}

    def __init__(self, parent=None):
        super().__init__(parent)
        self._combo = QtWidgets.QComboBox(self)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._combo)
        self._scene, self._observers, self._ids, self._current = None, [], [], ""
        self._node_types, self._hide_child_types = [], []
        self._show_child_types, self._show_hidden, self._none_enabled = True, False, False
        self._add_enabled = self._remove_enabled = self._edit_enabled = self._rename_enabled = True
        self._base_name, self._none_display = "", "None"
        self._combo.currentIndexChanged.connect(self._on_index_changed)

    nodeTypes = _string_list_property("_node_types")
    hideChildNodeTypes = _string_list_property("_hide_child_types")
    showChildNodeTypes = _bool_property("_show_child_types")
    showHidden = _bool_property("_show_hidden")
    noneEnabled = _bool_property("_none_enabled")
    addEnabled = _bool_property("_add_enabled", refresh=False)
    removeEnabled = _bool_property("_remove_enabled", refresh=False)
    editEnabled = _bool_property("_edit_enabled", refresh=False)
    renameEnabled = _bool_property("_rename_enabled", refresh=False)
    baseName = QtCore.Property(str, lambda self: self._base_name, lambda self, v: setattr(self, "_base_name", v))
    noneDisplay = QtCore.Property(str, lambda self: self._none_display,
                                  lambda self, v: (setattr(self, "_none_display", v), self._refresh()))

    # --- scene -------------------------------------------------------------------------------------------
    def setMRMLScene(self, scene):
        if self._scene is not None:
            for tag in self._observers:
                self._scene.RemoveObserver(tag)
        self._scene, self._observers = scene, []
        if scene is not None:
            self._observers = [scene.AddObserver(getattr(scene, e), lambda *args: self._refresh())
                               for e in SCENE_EVENTS]
        self._refresh()

    def mrmlScene(self):
        return self._scene

    def accepts(self, node) -> bool:
        """qMRMLSortFilterProxyModel's rule for one node."""
        if not self._show_hidden and node.GetHideFromEditors():
            return False
        if any(node.IsA(t) for t in self._hide_child_types):
            return False
        if self._show_child_types:
            return any(node.IsA(t) for t in self._node_types)
        return node.GetClassName() in self._node_types

    def _listed_ids(self) -> list[str]:
        if self._scene is None or self._scene.IsClosing() or self._scene.IsBatchProcessing():
            return []
        nodes = [self._scene.GetNthNode(i) for i in range(self._scene.GetNumberOfNodes())]
        return [n.GetID() for n in nodes if n is not None and self.accepts(n)]

    def _refresh(self):
        if self._scene is not None and (self._scene.IsClosing() or self._scene.IsBatchProcessing()):
            return
        before = self._current
        added = [i for i in self._listed_ids() if i not in self._ids]
        self._ids = self._listed_ids()
        if self._current not in self._ids:
            self._current = ""
        if not self._current and not self._none_enabled and self._ids:
            self._current = self._ids[0]
        self._combo.blockSignals(True)
        self._combo.clear()
        if self._none_enabled:
            self._combo.addItem(self._none_display)
        for node_id in self._ids:
            self._combo.addItem(self._scene.GetNodeByID(node_id).GetName())
        self._combo.setCurrentIndex(self._index_of(self._current))
        self._combo.blockSignals(False)
        for node_id in added:
            self.nodeAdded.emit(self._scene.GetNodeByID(node_id))
        if self._current != before:
            self._emit_current()

    def _index_of(self, node_id: str) -> int:
        offset = 1 if self._none_enabled else 0
        return self._ids.index(node_id) + offset if node_id in self._ids else (0 if self._none_enabled else -1)

    def _on_index_changed(self, index: int):
        offset = 1 if self._none_enabled else 0
        node_id = self._ids[index - offset] if 0 <= index - offset < len(self._ids) else ""
        if node_id != self._current:
            self._current = node_id
            self._emit_current()

    def _emit_current(self):
        node = self.currentNode()
        self.currentNodeChanged[object].emit(node)
        self.currentNodeChanged[bool].emit(node is not None)
        self.currentNodeIDChanged.emit(self._current)

    # --- selection ---------------------------------------------------------------------------------------
    def currentNode(self):
        return self._scene.GetNodeByID(self._current) if self._scene is not None and self._current else None

    def setCurrentNode(self, node):
        node_id = node if isinstance(node, str) else (node.GetID() if node is not None else "")
        self.setCurrentNodeID(node_id)

    def setCurrentNodeID(self, node_id: str):
        if node_id and node_id not in self._ids:
            return  # the real widget ignores nodes it does not list
        if not node_id and not self._none_enabled and self._ids:
            return
        if node_id != self._current:
            self._current = node_id
            self._combo.blockSignals(True)
            self._combo.setCurrentIndex(self._index_of(node_id))
            self._combo.blockSignals(False)
            self._emit_current()

    currentNodeID = QtCore.Property(str, lambda self: self._current, setCurrentNodeID)

    def nodeCount(self) -> int:
        return len(self._ids)

    def nodeFromIndex(self, index: int):
        return self._scene.GetNodeByID(self._ids[index]) if 0 <= index < len(self._ids) else None
