"""Where a fine-tuning starts (--init): the settings it takes from that model, and the weights it loads."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import FinetuneConfig, NetworkConfig
from ..errors import PGLError
from ..models.networks import SegmentationNet, is_decoder_key
from ..models.store import LoadedModel, load_model, read_metadata
from ..pretraining.advice import pretraining_advice
from ..progress import ProgressCallback, emit


def resolve_init(options: dict, progress: ProgressCallback | None = None) -> dict:
    """Take network and HU window from the --init model (refusing a network that contradicts it), and its spacing
    where none is given: a given spacing is kept, since a convolutional network's weights carry across spacings."""
    init = options.get("init", "none")
    if not init or init == "none":
        return options
    metadata = read_metadata(init)  # the settings only: no need to read the weights here
    from_model = {"network": NetworkConfig.from_dict(metadata["network"]), "spacing": tuple(metadata["spacing"]),
                  "hu_window": tuple(metadata["hu_window"])}
    resolved = dict(options)
    for key, value in from_model.items():
        given = options.get(key)
        if given is None:
            resolved[key] = value
            continue
        given = NetworkConfig.from_dict(given) if isinstance(given, dict) else given
        if key == "network" and given != value:
            raise PGLError(f"{init}: was pretrained with another network configuration ({value.to_dict()}) than "
                           f"the one asked for ({given.to_dict()}); drop the network options or use --init none.")
        differs = key != "network" and tuple(float(v) for v in np.atleast_1d(given)) != tuple(float(v) for v in value)
        if differs and key == "hu_window":
            emit(progress, "warning", message=f"--hu-window {given} differs from the pretrained model's {value}; "
                                              f"the model's window is used (its weights expect those intensities).")
            resolved[key] = value
        elif differs:
            emit(progress, "info", message=f"fine-tuning at --spacing {tuple(given)} mm; {init} was pretrained at "
                                           f"{value} mm (its weights carry across spacings).")
    return resolved


@dataclass
class InitStart:
    """What a fine-tuning took from --init."""
    info: dict = field(default_factory=lambda: {"path": "none"})  # the model's record in the metadata ("init")
    transferred: set[str] = field(default_factory=set)  # backbone parameter names whose values came from --init
    continued: bool = False  # --init is a segmentation model with these labels: its head goes on too
    lineage: list[dict] = field(default_factory=list)  # the earlier runs of a segmentation model


def start_from_init(network: SegmentationNet, config: FinetuneConfig, names: dict[int, str],
                    progress: ProgressCallback | None = None) -> InitStart:
    """Load --init into `network`: a segmentation model with the same labels continues whole (head included),
    any other model gives its backbone (all of it, or its encoder with --transfer encoder)."""
    if not config.init or config.init == "none":
        return InitStart()
    model = load_model(config.init)
    if model.network_config != config.network:
        raise PGLError(f"{config.init}: was pretrained with another network configuration "
                       f"({model.network_config.to_dict()}) than this fine-tuning uses "
                       f"({config.network.to_dict()}); use the model's network or --init none.")
    start = InitStart()
    if model.kind == "segmentation":
        start.lineage = list(model.metadata.get("lineage") or [])
        start.continued = continues_with_same_labels(network, model, config.init, names, progress)
    if model.kind == "pretrained":
        advice = pretraining_advice(int(model.metadata.get("num_scans") or 0),
                                    int((model.metadata.get("training") or {}).get("steps") or 0))
        if advice:
            emit(progress, "warning", message=f"{config.init}: {advice}")
    if not start.continued:
        load_backbone(network, model, config.transfer)
    start.transferred = {k for k in model.backbone.state_dict()
                         if start.continued or config.transfer == "whole" or not is_decoder_key(k)}
    start.info = {"path": str(Path(config.init).resolve()), "kind": model.kind,
                  "transfer": "continued" if start.continued else config.transfer,
                  "method": model.metadata.get("method"), "weights_sha256": model.metadata.get("weights_sha256")}
    if start.continued:
        emit(progress, "info", message=f"continuing {config.init} (same labels: head included)")
    return start


def continues_with_same_labels(network: SegmentationNet, model: LoadedModel, init: str, names: dict[int, str],
                               progress: ProgressCallback | None) -> bool:
    """Load a segmentation model whole when it has these labels (True); else warn that only its backbone is used."""
    theirs = {int(k): v["name"] for k, v in model.label_table.items()}
    if theirs == names:
        network.load_state_dict(model.network.state_dict())
        return True
    emit(progress, "warning", message=f"{init}: is a segmentation model for other labels ({theirs}) than this "
                                      f"fine-tuning ({names}); only its backbone is used and a new head is trained. "
                                      f"To continue it, use its labels; to start from pretraining, give a "
                                      f"pretrained model.")
    return False


def load_backbone(network: SegmentationNet, model: LoadedModel, transfer: str) -> None:
    """The model's backbone weights into `network`'s: all of them, or the encoder's only (--transfer encoder)."""
    weights = model.backbone.state_dict()
    if transfer == "encoder":
        weights = {**network.backbone.state_dict(), **{k: v for k, v in weights.items() if not is_decoder_key(k)}}
    network.backbone.load_state_dict(weights)
