"""pgl_engine: Prior-Guided Local self-supervised pretraining for 3D CT segmentation (Xie et al. 2020).

Pure Python (PyTorch + MONAI + SimpleITK + pydicom + nibabel); never imports Slicer or Qt. The names below are
imported on first use, so a command (`pgl segment`) loads only the modules it needs. The sub-packages group the
modules by job: data, models, training, pretraining, finetuning, inference, export, comparison, phantoms.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_HOME = {  # public name -> the module that defines it
    "NetworkConfig": "config", "PretrainConfig": "config", "FinetuneConfig": "config",
    "PGLError": "errors", "TrainingInterrupted": "errors", "evaluate": "inference.evaluation",
    "CompareConfig": "comparison.config", "compare": "comparison.experiment", "demo": "walkthrough",
    "finetune": "finetuning.trainer", "LoadedModel": "models.store", "load_model": "models.store",
    "read_metadata": "models.store", "write_cohort": "phantoms.tuning", "pretrain": "pretraining.trainer",
    "scan_listing": "data.scan_list", "segment": "inference.segmentation", "export_dataset": "export.nnunet",
    "export_model": "export.bundle",
}
__all__ = ["__version__", *_HOME]


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'pgl_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
