"""A `qt` module with PythonQt's semantics, over PySide (see binding.py).

What the panels rely on, as PythonQt gives it in Slicer:
- Q_PROPERTY values read and written as attributes (`button.text = "Run"`, `spin.value`), `name` for objectName;
- `obj.connect("clicked()", fn)` with C++ signal signatures, which must exist (a wrong one raises here; PythonQt
  prints an error and the button silently does nothing, which a test would never see);
- `qt.QTimer`, `qt.QFileDialog`, `qt.QUiLoader`, `qt.Qt` enums, and every other Qt class by name.
Widgets created by `qt.QUiLoader` (so by `slicer.util.loadUI`) get these semantics too; custom widget classes
(CTK, qMRML) come from `register_custom_widget`, and their designer properties and the .ui file's <connections>
are applied through the same strict rules.
"""
from __future__ import annotations

import sys
import types
import xml.etree.ElementTree as ET

from .binding import QtCore, QtGui, QtUiTools, QtWidgets

CUSTOM_WIDGETS: dict[str, type] = {}
_CLASSES: dict[str, type] = {}


def normalized_signature(signature: str) -> str:
    """`currentPathChanged(const QString&)` -> `currentPathChanged(QString)`, as Qt's moc normalises it."""
    name, _, rest = signature.replace(" ", "").partition("(")
    args = [a.replace("const", "", 1) if a.startswith("const") else a for a in rest.rstrip(")").split(",") if a]
    return f"{name}({','.join(a.rstrip('&') for a in args)})"


class PythonQtObject:
    """Mixin for QObject subclasses: PythonQt's attribute and connection semantics."""

    # C++ signatures of signals declared in Python (their Qt signature would read PyObject): signature -> getter
    PYTHONQT_SIGNALS: dict = {}

    def __getattribute__(self, name):
        if not name.startswith("_"):
            if name in ("connect", "disconnect"):  # PySide resolves these to QObject's static ones first
                return types.MethodType(getattr(PythonQtObject, name), self)
            if name == "name":
                return QtCore.QObject.objectName(self)
            meta = QtCore.QObject.metaObject(self)
            if meta.indexOfProperty(name) >= 0:
                return QtCore.QObject.property(self, name)
        return super().__getattribute__(name)

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            if name == "name":
                QtCore.QObject.setObjectName(self, value)
                return
            meta = QtCore.QObject.metaObject(self)
            index = meta.indexOfProperty(name)
            if index >= 0:
                if not meta.property(index).isWritable():
                    raise AttributeError(f"{type(self).__name__}.{name} is read-only")
                if not QtCore.QObject.setProperty(self, name, value):
                    raise TypeError(f"{type(self).__name__}.{name} cannot be set to {value!r}")
                return
        super().__setattr__(name, value)

    def _bound_signal(self, signature: str):
        wanted = normalized_signature(signature)
        for cls in type(self).__mro__:
            getter = vars(cls).get("PYTHONQT_SIGNALS", {}).get(wanted)
            if getter is not None:
                return getter(self)
        if QtCore.QObject.metaObject(self).indexOfSignal(wanted) < 0:
            raise AttributeError(f"{type(self).__name__} has no signal {signature!r}: PythonQt would not connect it")
        name, _, args = wanted.partition("(")
        instance = super().__getattribute__(name)
        args = args.rstrip(")")
        if args:
            try:
                return instance[args]  # the overload with these argument types
            except (KeyError, TypeError, IndexError):
                return instance
        return instance

    def connect(self, signature: str, slot) -> bool:
        self._bound_signal(signature).connect(slot)
        return True

    def disconnect(self, signature: str, slot) -> bool:
        self._bound_signal(signature).disconnect(slot)
        return True


def pythonqt_class(qt_class: type) -> type:
    """The PythonQt-semantics subclass of a PySide QObject class (made once per class)."""
    name = qt_class.__name__
    if name not in _CLASSES:
        _CLASSES[name] = type(name, (PythonQtObject, qt_class), {"__module__": "qt"})
    return _CLASSES[name]


def register_custom_widget(cls: type) -> type:
    """A stand-in for a CTK / qMRML widget class the .ui files name."""
    CUSTOM_WIDGETS[cls.__name__] = cls
    return cls


def _qt_class(name: str):
    for module in (QtWidgets, QtCore, QtGui):
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            return pythonqt_class(cls) if issubclass(cls, QtCore.QObject) else cls
    return None


# --- .ui files ---------------------------------------------------------------------------------------------
def _designer_value(element: ET.Element):
    """A <property> value from a .ui file as Python: string, bool, number, string list, or set/enum text."""
    value = next(iter(element))
    if value.tag == "bool":
        return value.text == "true"
    if value.tag in ("number", "enum", "set"):
        return int(value.text) if value.tag == "number" else value.text
    if value.tag == "double":
        return float(value.text)
    if value.tag == "stringlist":
        return [s.text or "" for s in value.iter("string")]
    if value.tag == "string":
        return value.text or ""
    raise ValueError(f"designer property type <{value.tag}> is not supported by the harness")


class QUiLoader(QtUiTools.QUiLoader):
    """Qt's own loader; every widget and layout it makes has PythonQt semantics, custom classes are the stand-ins."""

    def __init__(self, *args):
        super().__init__(*args)
        self._made = []  # Python owns widgets made here until Qt's parent takes them; keep them alive meanwhile

    def createWidget(self, class_name, parent=None, name=""):
        if class_name in CUSTOM_WIDGETS:
            widget = CUSTOM_WIDGETS[class_name](parent)
        else:
            cls = _qt_class(class_name)
            if cls is None:
                raise RuntimeError(f"the .ui file uses {class_name}, which is neither Qt nor a registered stand-in")
            widget = cls(parent)
        widget.setObjectName(name)
        self._made.append(widget)
        return widget

    def load(self, device, parent=None):
        data = bytes(device.readAll()) if hasattr(device, "readAll") else open(device, "rb").read()
        root = ET.fromstring(data)
        custom_properties, connections = [], []
        unnamed = set()
        for index, widget in enumerate(root.iter("widget")):
            if widget.get("class") in CUSTOM_WIDGETS:
                if not widget.get("name"):  # a name only to find it again; taken away after loading
                    widget.set("name", f"_harness_unnamed_{index}")
                    unnamed.add(widget.get("name"))
                for prop in [p for p in widget if p.tag == "property"]:
                    custom_properties.append((widget.get("name"), prop.get("name"), _designer_value(prop)))
                    widget.remove(prop)
        for block in root.findall("connections"):
            connections += [{c.tag: c.text for c in connection} for connection in block]
            root.remove(block)
        buffer = QtCore.QBuffer()
        buffer.setData(QtCore.QByteArray(ET.tostring(root)))
        buffer.open(QtCore.QIODevice.ReadOnly)
        top = super().load(buffer, parent)
        if top is None:
            raise RuntimeError(f"QUiLoader could not load the .ui file: {self.errorString()}")
        by_name = {QtCore.QObject.objectName(w): w for w in [top, *top.findChildren(QtCore.QObject)]}
        for widget_name, prop, value in custom_properties:
            by_name[widget_name].set_designer_property(prop, value)
        for widget_name in unnamed:
            QtCore.QObject.setObjectName(by_name[widget_name], "")
        for c in connections:
            sender, receiver = by_name[c["sender"]], by_name[c["receiver"]]
            slot_name = c["slot"].split("(")[0]
            if not hasattr(receiver, slot_name):
                raise AttributeError(f"{c['receiver']} has no slot {c['slot']}")
            sender.connect(c["signal"], getattr(receiver, slot_name))
        return top


class DesignerProperties:
    """Mixin for stand-ins: apply a designer property the way Qt would, refusing names the header lacks."""

    DESIGNER_ENUMS: dict = {}  # property -> {enum value name: int}, for <set> and <enum> values

    def set_designer_property(self, name: str, value) -> None:
        if QtCore.QObject.metaObject(self).indexOfProperty(name) < 0:
            raise AttributeError(f"{type(self).__name__} has no property {name!r} (see its header)")
        if name in self.DESIGNER_ENUMS and isinstance(value, str):
            table, total = self.DESIGNER_ENUMS[name], 0
            for part in value.split("|"):
                key = part.strip().split("::")[-1]
                if key not in table:
                    raise ValueError(f"{type(self).__name__}.{name}: unknown value {part!r}")
                total |= table[key]
            value = total
        setattr(self, name, value)


# --- the module -------------------------------------------------------------------------------------------
class _QtModule(types.ModuleType):
    """`import qt`: every Qt class by name, with PythonQt semantics for QObjects."""

    Qt = QtCore.Qt
    QUiLoader = QUiLoader
    Signal, Property, Slot = QtCore.Signal, QtCore.Property, QtCore.Slot

    def __getattr__(self, name):
        if name in CUSTOM_WIDGETS:
            return CUSTOM_WIDGETS[name]
        cls = _qt_class(name)
        if cls is None:
            raise AttributeError(f"module 'qt' has no attribute {name!r}")
        return cls


def install() -> types.ModuleType:
    """Make `import qt` give this module."""
    module = sys.modules.get("qt")
    if not isinstance(module, _QtModule):
        module = _QtModule("qt", __doc__)
        sys.modules["qt"] = module
    return module

