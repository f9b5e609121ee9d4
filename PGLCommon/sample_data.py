"""Sample data for both modules: a small phantom cohort written by the engine, loaded as nodes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .engine_runs import start_engine, wait_for
from .jobs import EngineJob
from .nodes import NodeError, label_table_path, load_segmentation, read_label_table


def write_sample_data(folder: str, count: int = 4, wait: bool = True, onEvent: Callable[[dict], None] | None = None,
                      job_class: type = EngineJob):
    """Write phantoms (images/, labels/, dataset.json) into `folder`; wait=False returns the running job."""
    job = start_engine("phantom", ["--out", folder, "--count", count, "--labels", "--spacing-scale", 2], "cpu",
                       job_class)
    if not wait:
        return job
    wait_for(job, onEvent)
    return Path(folder)


def load_sample_case(folder: str, scene, index: int = 0):
    """Phantom `index` of a sample cohort as a volume node and its segmentation node."""
    import slicer

    folder = Path(folder)
    name = f"phantom_{index:03d}"
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(folder / "images" / f"{name}.nii.gz"))
    if not storage.ReadData(volume):
        scene.RemoveNode(volume)
        raise NodeError(f"{folder}: holds no {name}; generate the sample data first.")
    label_map = folder / "labels" / f"{name}.nii.gz"
    table = read_label_table(label_table_path(label_map))  # names and colours from the engine
    segmentation = load_segmentation(label_map, table, f"{name} labels", volume)
    return volume, segmentation
