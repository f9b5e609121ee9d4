"""A real MRML scene outside the Slicer application, from the PyPI slicer-core package.

slicer-core has MRML and the module logics but no application: this harness builds the scene, the
application logic with its colour logic, the volumes and segmentations logics (each with the scene set
before use), and provides `slicer.mrmlScene` and `slicer.modules.<name>.logic()` for slicer.util.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace


class MRMLHarness:
    def __init__(self):
        import slicer

        self.slicer = slicer
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.color_logic = slicer.vtkSlicerColorLogic()
        self.color_logic.SetMRMLApplicationLogic(self.app_logic)
        self.color_logic.SetMRMLScene(self.scene)
        self.app_logic.SetColorLogic(self.color_logic)
        self.volumes_logic = slicer.vtkSlicerVolumesLogic()
        self.volumes_logic.SetMRMLApplicationLogic(self.app_logic)
        self.volumes_logic.SetMRMLScene(self.scene)
        self.segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
        self.segmentations_logic.SetMRMLApplicationLogic(self.app_logic)
        self.segmentations_logic.SetMRMLScene(self.scene)
        self.previous = (getattr(slicer, "mrmlScene", None), getattr(slicer, "modules", None))
        slicer.mrmlScene = self.scene
        slicer.modules = SimpleNamespace(volumes=SimpleNamespace(logic=lambda: self.volumes_logic),
                                         segmentations=SimpleNamespace(logic=lambda: self.segmentations_logic))

    def load_volume(self, path: Path, name: str):
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        storage = self.slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        assert storage.ReadData(node), path
        return node

    def close(self) -> None:
        self.scene.Clear(True)
        self.slicer.mrmlScene, modules = self.previous
        if modules is None:
            del self.slicer.modules
        else:
            self.slicer.modules = modules
