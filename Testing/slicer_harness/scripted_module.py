"""A stand-in for `slicer.ScriptedLoadableModule` (not in slicer-core), shaped like Slicer's
Base/Python/slicer/ScriptedLoadableModule.py: the module registers its self-test, the widget gets `parent`,
`layout` and `resourcePath`, the test case is a unittest.TestCase with delayDisplay."""
from __future__ import annotations

import importlib
import os
import sys
import types
import unittest


class ScriptedLoadableModule:
    def __init__(self, parent):
        import slicer

        self.parent = parent
        self.moduleName = type(self).__name__
        parent.title, parent.categories, parent.dependencies, parent.contributors = "", [], [], []
        parent.helpText = parent.acknowledgementText = ""
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def runTest(self, msec=100, **kwargs):
        test_case = getattr(importlib.import_module(type(self).__module__), self.moduleName + "Test")()
        test_case.messageDelay = msec
        test_case.runTest(**kwargs)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        import qt
        import slicer

        self.moduleName = type(self).__name__[:-len("Widget")]
        self.developerMode = False
        if parent is None:
            parent = slicer.qMRMLWidget()
            parent.setLayout(qt.QVBoxLayout())
            parent.setMRMLScene(slicer.mrmlScene)
        self.parent = parent
        self.layout = parent.layout()

    def resourcePath(self, filename):
        import slicer

        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

    def setup(self):
        pass

    def cleanup(self):
        pass

    def enter(self):
        pass

    def exit(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = type(self).__name__[:-len("Logic")] if type(self).__name__.endswith("Logic") else ""


class ScriptedLoadableModuleTest(unittest.TestCase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messageDelay = 100

    def delayDisplay(self, message, requestedDelay=None, msec=None):
        import slicer

        slicer.util.delayDisplay(message, self.messageDelay if msec is None else msec)


def install() -> types.ModuleType:
    import slicer

    module = types.ModuleType("slicer.ScriptedLoadableModule", __doc__)
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(module, cls.__name__, cls)
    sys.modules["slicer.ScriptedLoadableModule"] = module
    slicer.ScriptedLoadableModule = module
    return module
