"""What the PGL Segmentation workflows read and what Apply hands to Refine, as plain objects (no Qt).

The panel binds its fields to one SegmentationParameters and passes it to the logic's workflows (start_finetune,
start_check, start_apply, start_refine); a console script can build one itself.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from PGLCommon.nodes import in_scene

from pgl_engine.contract import CHECK_PRETRAINING_STEPS, DEFAULT_FINETUNE_MINUTES, DEVICE, REFINE_MINUTES

REFINE_SECONDS = REFINE_MINUTES * 60  # Refine's default budget: the engine's for continuing a segmentation model


def sample_folder() -> str:
    return os.path.join(tempfile.gettempdir(), "PGLSampleData")


@dataclass
class SegmentationParameters:
    """The panel's fields; the defaults are the engine's (pgl_engine.contract), which the panel shows at first."""

    pairs: list = field(default_factory=list)  # the listed (volume node, segmentation node) pairs (None: gone)
    selectedPair: tuple = (None, None)  # the pair in the selectors: fine-tuned on when none is listed
    segmentNames: list[str] | None = None  # the checked segments; None: every segment
    device: str = DEVICE
    sampleFolder: str = field(default_factory=sample_folder)
    # fine-tune and check the pretraining
    initModel: str = ""  # a pretrained (or segmentation) model folder; "" or "none": random initialisation
    outputDir: str = ""
    finetuneMinutes: float = DEFAULT_FINETUNE_MINUTES
    overwrite: bool = False  # replace a model or run in outputDir (the panel asks first)
    checkSteps: int = CHECK_PRETRAINING_STEPS
    # apply
    inputVolume: object = None
    model: str = ""
    largestComponent: bool = True
    show3D: bool = True
    # refine
    refineSeconds: float = round(REFINE_SECONDS)
    refineReplace: bool = True  # segment again into the corrected node (else into a new one)
    # export
    exportModelDir: str = ""
    keepCaseNames: bool = False
    nnunetFolder: str = ""
    nnunetName: str = "PGL"
    nnunetId: int = 0  # 0: the next free ID

    def training_pairs(self) -> tuple[list, list]:
        """(volumes, segmentations) of the listed pairs, else of the pair in the selectors."""
        pairs = self.pairs or [self.selectedPair]
        return [v for v, _ in pairs], [s for _, s in pairs]

    def listed_pairs(self) -> tuple[list, list]:
        """(volumes, segmentations) of the listed pairs only (None where a node is gone)."""
        return [v for v, _ in self.pairs], [s for _, s in self.pairs]

    def complete_pairs(self) -> list[tuple]:
        """The listed pairs whose nodes are both there."""
        return [(v, s) for v, s in self.pairs if v is not None and s is not None]


@dataclass
class SegmentationResult:
    """A segmentation as it came from the model: what Refine compares the user's correction against."""

    volume: object  # the volume node segmented
    segmentation: object  # the segmentation node that holds the result
    model: str  # the model folder
    names: list[str]  # the model's label names (value i+1 = names[i])
    labels: object  # the (k, j, i) label array the engine wrote
    values: dict[str, int]  # segment name -> its value in `labels`

    @classmethod
    def made(cls, volume, node, labels, table: dict, model: str, names: list[str]) -> SegmentationResult:
        """From a segmentation job's result (node, label array, label table)."""
        values = {entry["name"]: int(value) for value, entry in table.items()}
        return cls(volume, node, model, names, labels, values)

    def present(self) -> bool:
        """Its volume and segmentation are still in the scene."""
        return in_scene(self.volume) and in_scene(self.segmentation)
