"""pgl_engine: Prior-Guided Local self-supervised pretraining for 3D CT segmentation (Xie et al. 2020).

Pure Python (PyTorch + MONAI + SimpleITK + pydicom + nibabel); never imports Slicer or Qt. The names below are
imported on first use, so a command (`pgl segment`) loads only the modules it needs.
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_HOME = {  # public name -> the module that defines it
    "NetworkConfig": "config", "PretrainConfig": "config", "FinetuneConfig": "config",
    "PGLError": "errors", "TrainingInterrupted": "errors", "evaluate": "evaluate",
    "CompareConfig": "experiment", "compare": "experiment", "demo": "demo", "finetune": "finetune",
    "LoadedModel": "model_store", "load_model": "model_store", "read_metadata": "model_store",
    "write_cohort": "phantom", "pretrain": "pretrain", "scan_listing": "scan_list", "segment": "segment",
    "export_dataset": "nnunet_export", "export_model": "bundle_export",
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


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # importing a submodule binds it on the package; where it is named like the function it exports
        # (segment, finetune, pretrain, evaluate), `pgl_engine.<name>` stays the function, as documented
        if isinstance(value, types.ModuleType) and _HOME.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
