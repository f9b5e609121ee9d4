"""PGL Segmentation: fine-tune a PGL-pretrained network from a few segmentations and segment volumes."""
import os
import shutil
import sys
import tempfile

import slicer
# run from a source checkout: PGLCommon and pgl_engine sit one folder up (installed, they sit beside the module)
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_SOURCE_ROOT, "PGLCommon")) and _SOURCE_ROOT not in sys.path:
    sys.path.insert(0, _SOURCE_ROOT)

from PGLSegmentationLib.logic import PGLSegmentationLogic  # noqa: F401  (console: PGLSegmentation.PGLSegmentationLogic())
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class PGLSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        super().__init__(parent)
        parent.title = "PGL Segmentation"
        parent.categories = ["Segmentation.PGL"]
        parent.contributors = ["PGL for 3D Slicer contributors"]
        parent.helpText = ("Fine-tune a 3D segmentation network (initialised from PGL Pretrain) from a few "
                           "segmentations drawn in the Segment Editor, then segment any loaded volume.")
        parent.acknowledgementText = "Method: Xie et al., PGL, arXiv 2011.12640 (2020)."


class PGLSegmentationWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        super().setup()
        from PGLSegmentationLib.widget import SegmentationPanel
        from PGLCommon.work_folders import remove_stale_work_folders

        remove_stale_work_folders()  # what a Slicer that quit or crashed mid-job left; running jobs keep theirs

        self.panel = SegmentationPanel(self.resourcePath("UI/PGLSegmentation.ui"), self.layout)

    def cleanup(self):
        self.panel.shutdown()


class PGLSegmentationTest(ScriptedLoadableModuleTest):
    """Reload and Test: sample data -> fine-tune a tiny model through the logic -> segment -> check the node.

    Five training steps teach the model little, so the checks are what holds whatever it learned: the model's
    label set, and a result node on the input's grid whose segments carry only the model's names."""

    def runTest(self):
        from PGLCommon.dependencies import needed_in_testing

        slicer.mrmlScene.Clear()
        missing = needed_in_testing()
        if missing:  # as other AI extensions' self-tests: no multi-GB install on the extensions factory
            self.delayDisplay(f"PGL Segmentation self-test: engine part skipped: Slicer runs in testing mode, where "
                              f"nothing is installed, and the engine needs {', '.join(missing)}.")
            return
        self.test_finetune_and_segment()

    def test_finetune_and_segment(self):
        from PGLCommon.dependencies import ensure_dependencies
        from PGLCommon.nodes import read_label_table
        from pgl_engine.contract import MODEL_METADATA_FILE

        ensure_dependencies(ask=False)
        logic = PGLSegmentationLogic()
        work = tempfile.mkdtemp(prefix="pgl_selftest_")
        logic.sample_data(os.path.join(work, "data"), count=2)
        volume, segmentation = logic.load_sample_case(os.path.join(work, "data"), slicer.mrmlScene, 0)
        other, _ = logic.load_sample_case(os.path.join(work, "data"), slicer.mrmlScene, 1)
        model = logic.finetune([volume], [segmentation], os.path.join(work, "model"), segmentNames=["liver"],
                               steps=5, device="cpu", patchSize=(32, 32, 16), spacing=(6, 6, 8),
                               extraArgs=["--workers", "0", "--seed", "0"], wait=True)
        labels = read_label_table(os.path.join(model, MODEL_METADATA_FILE))
        self.assertEqual([entry["name"] for entry in labels.values()], ["liver"])
        result = logic.segment(other, model, device="cpu")
        self.assertTrue(result.IsA("vtkMRMLSegmentationNode"))
        self.assertEqual(result.GetName(), f"{other.GetName()} PGL")
        found = result.GetSegmentation()
        self.assertTrue({found.GetNthSegment(i).GetName() for i in range(found.GetNumberOfSegments())} <= {"liver"})
        shutil.rmtree(work, ignore_errors=True)
        self.delayDisplay("PGL Segmentation self-test passed")
