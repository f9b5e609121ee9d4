"""Model folders: safetensors + JSON round trip; nothing that can run code is ever loaded."""
import json
import os
import pickle

import pytest
import torch
from conftest import PRETRAIN_NETWORK
from safetensors.torch import save_file

from pgl_engine.config import NetworkConfig
from pgl_engine.errors import PGLError
from pgl_engine.models.networks import build_backbone
from pgl_engine.models.store import METADATA_FILE, WEIGHTS_FILE, load_model, save_model


def write_model(folder):
    network = NetworkConfig(**PRETRAIN_NETWORK)
    torch.manual_seed(3)
    backbone = build_backbone(network)
    tensors = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    save_model(folder, tensors, {"kind": "pretrained", "method": "pgl", "network": network.to_dict()})
    return backbone


class Payload:
    """Unpickling this runs a command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip_restores_the_weights(tmp_path):
    backbone = write_model(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.kind == "pretrained" and loaded.network_config == NetworkConfig(**PRETRAIN_NETWORK)
    for (name, a), (_, b) in zip(backbone.state_dict().items(), loaded.backbone.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_pickle_with_a_payload_is_refused_and_never_runs(tmp_path):
    write_model(tmp_path)
    marker = tmp_path / "payload_ran"
    (tmp_path / WEIGHTS_FILE).write_bytes(pickle.dumps(Payload(marker)))
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    meta.pop("weights_sha256")  # make the hash check pass through to the reader itself
    (tmp_path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(PGLError, match="not a safetensors file"):
        load_model(tmp_path)
    assert not marker.exists()
    pickled = tmp_path / "model.pt"
    torch.save({"x": Payload(marker)}, pickled)
    with pytest.raises(PGLError, match="is a file"):
        load_model(pickled)
    assert not marker.exists()


def test_folders_that_are_not_ours_are_refused(tmp_path):
    with pytest.raises(PGLError, match="not a PGL model folder"):
        load_model(tmp_path)
    (tmp_path / METADATA_FILE).write_text("{not json")
    with pytest.raises(PGLError, match="not valid JSON"):
        load_model(tmp_path)
    (tmp_path / METADATA_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(PGLError, match="not PGL model metadata"):
        load_model(tmp_path)


def test_weights_that_do_not_match_the_metadata_are_refused(tmp_path):
    write_model(tmp_path)
    save_file({"backbone.x": torch.zeros(3)}, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(PGLError, match="does not match"):
        load_model(tmp_path)
