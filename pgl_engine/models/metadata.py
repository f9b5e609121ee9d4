"""The record a trained model keeps beside its weights (the metadata JSON), assembled here for both commands."""
from __future__ import annotations

from datetime import datetime, timezone

from .. import __version__
from ..config import TrainConfig
from ..data.cache import CachedScan, data_fingerprint
from ..training.loop import RUNTIME_OPTIONS

# the order of the record's entries, shared by both kinds of model so that their files read alike
KEY_ORDER = ("kind", "method", "network", "spacing", "hu_window", "patch_size", "labels", "one_piece_labels", "init",
             "training",
             "validation", "learnt", "finished_early", "configuration", "effective_rank", "feature_channels",
             "data_fingerprint", "num_scans", "cases", "lineage", "engine_version", "created")


def created_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def training_record(config: TrainConfig, steps: int, **extra) -> dict:
    """The settings the model was trained with (runtime options and the network aside), its steps and `extra`."""
    settings = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_OPTIONS | {"network"}}
    return {**settings, "steps": steps, **extra}


def model_metadata(config: TrainConfig, kind: str, method: str, labels: dict, training: dict,
                   scans: list[CachedScan], num_scans: int, **entries) -> dict:
    """A model's metadata: what every model records (network, grid, intensity window, training, data, version)
    and the command's own `entries`."""
    metadata = {"kind": kind, "method": method, "network": config.network.to_dict(), "spacing": list(config.spacing),
                "hu_window": list(config.hu_window), "patch_size": list(config.patch_size), "labels": labels,
                "training": training, "data_fingerprint": data_fingerprint(scans), "num_scans": num_scans,
                "engine_version": __version__, "created": created_now(), **entries}
    ordered = {k: metadata.pop(k) for k in KEY_ORDER if k in metadata}
    return {**ordered, **metadata}
