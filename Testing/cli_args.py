"""Command lines of tiny `pgl` runs, for tests that run the engine as users do."""
from __future__ import annotations

from pathlib import Path

from conftest import SEG_NETWORK, TINY_NETWORK


def network_args(network: dict) -> list[str]:
    return ["--feature-channels", str(network["feature_channels"]), "--channels", *map(str, network["channels"]),
            "--strides", *map(str, network["strides"]), "--num-res-units", str(network["num_res_units"])]


def pretrain_args(images: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    """A pretraining of 2 steps (more with --steps in `extra`) on 8 mm voxels with the tiny network."""
    return ["pretrain", "--images", str(images), "--out", str(out), "--cache-dir", str(cache), "--steps", "2",
            "--batch-size", "2", "--patch-size", "16", "16", "16", "--spacing", "8", "8", "8", "--grid-size", "6",
            "--workers", "0", "--projector-hidden", "16", "--predictor-hidden", "16", "--projector-dim", "8",
            "--device", "cpu", *network_args(TINY_NETWORK), *extra]


def finetune_args(images: Path, labels: Path, out: Path, cache: Path, *extra: str, network: bool = True) -> list[str]:
    """A fine-tuning of 2 steps on 6 x 6 x 8 mm voxels (the network from --init when network=False)."""
    return ["finetune", "--images", str(images), "--labels", str(labels), "--out", str(out), "--cache-dir",
            str(cache), "--steps", "2", "--patch-size", "32", "32", "16", "--spacing", "6", "6", "8", "--workers",
            "0", "--device", "cpu", *(network_args(SEG_NETWORK) if network else []), *extra]
