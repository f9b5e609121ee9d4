"""pgl_engine: Prior-Guided Local self-supervised pretraining for 3D CT segmentation (Xie et al. 2020).

Pure Python (PyTorch + MONAI + SimpleITK + pydicom + nibabel); never imports Slicer or Qt.
"""
__version__ = "0.1.0"

from .config import FinetuneConfig, NetworkConfig, PretrainConfig  # noqa: E402
from .errors import PGLError, TrainingInterrupted  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .experiment import CompareConfig, compare, demo  # noqa: E402
from .finetune import finetune  # noqa: E402
from .model_store import LoadedModel, load_model, read_metadata  # noqa: E402
from .phantom import write_cohort  # noqa: E402
from .pretrain import pretrain  # noqa: E402
from .scan_list import scan_listing  # noqa: E402
from .segment import segment  # noqa: E402

__all__ = ["__version__", "NetworkConfig", "PretrainConfig", "FinetuneConfig", "CompareConfig", "PGLError",
           "TrainingInterrupted", "LoadedModel", "load_model", "read_metadata", "write_cohort", "pretrain",
           "finetune", "segment", "evaluate", "compare", "demo", "scan_listing"]
