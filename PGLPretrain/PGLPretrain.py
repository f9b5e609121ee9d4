"""PGL Pretrain: self-supervised PGL pretraining on a folder of unlabeled CT scans."""
import os
import shutil
import sys
import tempfile

import slicer
# run from a source checkout: PGLCommon and pgl_engine sit one folder up (installed, they sit beside the module)
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_SOURCE_ROOT, "PGLCommon")) and _SOURCE_ROOT not in sys.path:
    sys.path.insert(0, _SOURCE_ROOT)

from PGLPretrainLib.logic import PGLPretrainLogic  # noqa: F401  (console: PGLPretrain.PGLPretrainLogic())
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class PGLPretrain(ScriptedLoadableModule):
    def __init__(self, parent):
        super().__init__(parent)
        parent.title = "PGL Pretrain"
        parent.categories = ["Segmentation.PGL"]
        parent.contributors = ["PGL for 3D Slicer contributors"]
        parent.helpText = ("Prior-Guided Local (PGL) self-supervised pretraining of a 3D segmentation network on a "
                           "folder of unlabeled CT scans. Fine-tune the result in PGL Segmentation.")
        parent.acknowledgementText = "Method: Xie et al., PGL, arXiv 2011.12640 (2020)."


class PGLPretrainWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        super().setup()
        from PGLPretrainLib.widget import PretrainPanel
        from PGLCommon.work_folders import remove_stale_work_folders

        remove_stale_work_folders()  # what a Slicer that quit or crashed mid-job left; running jobs keep theirs

        self.panel = PretrainPanel(self.resourcePath("UI/PGLPretrain.ui"), self.layout)

    def cleanup(self):
        self.panel.shutdown()

    def exit(self):
        pass


class PGLPretrainTest(ScriptedLoadableModuleTest):
    """Reload and Test: a tiny phantom cohort pretrained for a few steps through the logic."""

    def runTest(self):
        from PGLCommon.dependencies import needed_in_testing

        slicer.mrmlScene.Clear()
        missing = needed_in_testing()
        if missing:  # as other AI extensions' self-tests: no multi-GB install on the extensions factory
            self.delayDisplay(f"PGL Pretrain self-test: engine part skipped: Slicer runs in testing mode, where "
                              f"nothing is installed, and the engine needs {', '.join(missing)}.")
            return
        self.test_pretrain_on_phantoms()

    def test_pretrain_on_phantoms(self):
        from PGLCommon.dependencies import ensure_dependencies
        from PGLCommon.sample_data import write_sample_data
        from pgl_engine.contract import MODEL_METADATA_FILE

        ensure_dependencies(ask=False)
        work = tempfile.mkdtemp(prefix="pgl_selftest_")
        write_sample_data(os.path.join(work, "data"), count=2)
        model = PGLPretrainLogic().pretrain(os.path.join(work, "data", "images"), os.path.join(work, "model"),
                                            steps=3, patchSize=(16, 16, 16), spacing=(8, 8, 8), device="cpu",
                                            extraArgs=["--workers", "0"], wait=True)
        self.assertTrue(os.path.isfile(os.path.join(model, MODEL_METADATA_FILE)))
        shutil.rmtree(work, ignore_errors=True)
        self.delayDisplay("PGL Pretrain self-test passed")
