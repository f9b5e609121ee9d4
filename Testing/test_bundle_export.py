"""`pgl export --format monai-bundle`, judged by MONAI's own runner in a process where pgl_engine cannot be imported:
its label maps agree with `pgl segment`'s on LPS and oblique scans with anisotropic spacing."""
import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import seg_options

from pgl_engine import export_model
from pgl_engine.cli import main
from pgl_engine.config import NetworkConfig
from pgl_engine.errors import PGLError
from pgl_engine.inference.segmentation import segment
from pgl_engine.models.networks import build_backbone, build_segmentation_net
from pgl_engine.models.store import load_model, save_model

pytestmark = pytest.mark.slow  # MONAI's bundle runner as the judge; a model of its own (250 steps)

# label values with a gap, so the bundle's class -> label value mapping is exercised (tumours left out: a tiny
# model does not learn them, and every label must appear in the outputs)
VALUES = {1: 1, 2: 2, 3: 3, 4: 6}  # phantom label -> label value here
NAMES = {1: "liver", 2: "spleen", 3: "right kidney", 6: "left kidney"}
MIN_DICE = 0.98

# runs MONAI's bundle CLI after making `import pgl_engine` fail, and says so first
RUNNER = """
import importlib.abc, runpy, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'pgl_engine':
            raise ModuleNotFoundError(f'{name} is blocked in this test')
sys.meta_path.insert(0, Blocked())
try:
    import pgl_engine
    sys.exit('pgl_engine is importable')
except ImportError:
    print('import pgl_engine: blocked', flush=True)
sys.argv = ['monai.bundle', *sys.argv[1:]]
runpy.run_module('monai.bundle', run_name='__main__')
"""


def relabelled_dataset(cohort, out):
    """A dataset.json of the cohort's scans with label maps holding only the organs, at the values of VALUES."""
    (out / "labels").mkdir(parents=True)
    training = []
    for path in sorted((cohort / "labels").glob("*.nii.gz")):
        image = nib.load(path)
        labels = np.asarray(image.dataobj)
        mapped = np.zeros(labels.shape, np.uint8)
        for source, value in VALUES.items():
            mapped[labels == source] = value
        nib.save(nib.Nifti1Image(mapped, image.affine), out / "labels" / path.name)
        training.append({"image": str(cohort / "images" / path.name), "label": str(out / "labels" / path.name)})
    dataset = out / "dataset.json"
    dataset.write_text(json.dumps({"labels": {"0": "background", **{str(v): n for v, n in NAMES.items()}},
                                   "training": training}))
    return dataset


def regridded(source, out, direction, spacing):
    """The scan resampled (linear, SimpleITK) onto a grid with this direction and spacing around its centre."""
    image = sitk.ReadImage(str(source))
    direction = np.asarray(direction, float).reshape(3, 3)
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    size = [int(np.ceil(e / s)) for e, s in zip(extent, spacing)]
    origin = centre - direction @ (np.array(spacing) * (np.array(size) - 1) / 2)
    resampled = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), spacing,
                              direction.ravel().tolist(), -1000)
    sitk.WriteImage(sitk.Cast(resampled, sitk.sitkInt16), str(out))
    return out


@pytest.fixture(scope="module")
def model(cohort, tmp_path_factory):
    """A tiny model fine-tuned on phantoms 0 and 1 (label values 1, 2, 3, 6)."""
    from pgl_engine.finetuning.trainer import finetune

    work = tmp_path_factory.mktemp("bundle_model")
    options = seg_options(cohort, work / "model", work / "cache", dataset=str(relabelled_dataset(cohort, work)))
    return finetune(**options)


@pytest.fixture(scope="module")
def scans(cohort, tmp_path_factory):
    """Phantom 2 (not learnt from) stored LPS (identity ITK direction) and oblique, with anisotropic voxels."""
    folder = tmp_path_factory.mktemp("scans")
    source = cohort / "images" / "phantom_002.nii.gz"
    tilt = sitk.VersorTransform((0.3, 0.2, 1.0), np.deg2rad(20)).GetMatrix()
    regridded(source, folder / "lps.nii.gz", np.eye(3), (4.5, 5.0, 10.0))
    regridded(source, folder / "oblique.nii.gz", tilt, (4.0, 5.5, 9.0))
    return folder


@pytest.fixture(scope="module")
def bundle(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "bundle"
    assert main(["export", "--model", str(model), "--format", "monai-bundle", "--out", str(out),
                 "--progress", "none"]) == 0
    return out


def dice(a, b, value):
    total = (a == value).sum() + (b == value).sum()
    return 2 * ((a == value) & (b == value)).sum() / total if total else 1.0


def test_monai_runner_without_pgl_engine_agrees_with_pgl_segment(bundle, model, scans, tmp_path):
    out = tmp_path / "bundle_out"
    command = [sys.executable, "-c", RUNNER, "run", "--config_file", str(bundle / "configs" / "inference.json"),
               "--dataset_dir", str(scans), "--output_dir", str(out)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith("import pgl_engine: blocked")
    measured = {}
    for precision in ("fp32", "auto"):  # the bundle computes in fp32; pgl segment's default may use bf16
        for reference in segment(model, scans, tmp_path / f"pgl_{precision}", precision=precision):
            ours = nib.load(out / reference.name.replace(".nii.gz", "_seg.nii.gz"))
            theirs = nib.load(reference)
            assert ours.shape == theirs.shape and np.allclose(ours.affine, theirs.affine, atol=1e-4)
            assert ours.get_data_dtype() == np.uint8
            a, b = np.asarray(ours.dataobj), np.asarray(theirs.dataobj)
            assert set(np.unique(b)) == {0, *NAMES}, f"every label appears in pgl segment's output: {np.unique(b)}"
            measured[(precision, reference.name)] = {NAMES[v]: round(float(dice(a, b, v)), 4) for v in NAMES}
    print("Dice between the bundle (MONAI runner) and pgl segment:", json.dumps(
        {f"{p} {name}": d for (p, name), d in measured.items()}, indent=1))
    for (precision, name), per_label in measured.items():
        if precision == "fp32":
            assert min(per_label.values()) >= MIN_DICE, (name, per_label)


def test_bundle_layout_metadata_and_weights(bundle, model):
    assert sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()) == [
        "LICENSE", "configs/inference.json", "configs/logging.conf", "configs/metadata.json", "docs/README.md",
        "models/model.pt"]
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version", "task",
                "description", "authors", "copyright", "network_data_format"):
        assert key in meta, key
    formats = meta["network_data_format"]
    assert formats["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "liver", "2": "spleen",
                                                         "3": "right kidney", "4": "left kidney"}
    assert formats["post_processed_outputs"]["pred"]["channel_def"] == {"0": "background", **{
        str(v): n for v, n in NAMES.items()}}
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    for key in ("network_def", "preprocessing", "postprocessing", "inferer", "dataset_dir", "output_dir",
                "bundle_root"):
        assert key in config, key  # MONAI Label's loader and the model zoo's variable names
    assert "pgl_engine" not in json.dumps(config)
    one_piece = load_model(model).metadata["one_piece_labels"]  # what `pgl segment` keeps one piece of by default
    kept = [t for t in config["postprocessing"]["transforms"] if t["_target_"] == "KeepLargestConnectedComponentd"]
    assert one_piece and [k["applied_labels"] for k in kept] == [one_piece]
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert state.keys() == load_model(model).network.state_dict().keys()
    readme = (bundle / "docs" / "README.md").read_text()
    assert "6 x 6 x 8 mm" in readme and "-175, 250" in readme and "left kidney" in readme
    assert "only the largest 26-connected piece kept" in readme


def test_cases_are_neutral_unless_kept(bundle, model, tmp_path):
    text = "".join(p.read_text() for p in bundle.rglob("*") if p.suffix in (".json", ".md"))
    assert "phantom" not in text and str(model.parent) not in text and "/tmp" not in text
    assert "case_001, case_002" in text
    kept = export_model(model, tmp_path / "kept", keep_case_names=True)
    assert "phantom_000" in json.loads((kept / "configs" / "metadata.json").read_text())["pgl"]["cases"]


def test_refusals_name_the_folder_and_write_nothing(model, tmp_path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(PGLError, match="already holds files"):
        export_model(model, occupied)
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]

    network = NetworkConfig(feature_channels=4, channels=(4, 8), strides=(2,))
    pretrained = save_model(tmp_path / "pretrained", {f"backbone.{k}": v for k, v in build_backbone(
        network).state_dict().items()}, {"kind": "pretrained", "network": network.to_dict()})
    assert main(["export", "--model", str(pretrained), "--out", str(tmp_path / "a"), "--progress", "none"]) == 1
    assert "is a pretrained model" in capsys.readouterr().err and not (tmp_path / "a").exists()

    meta = json.loads((model / "pgl_model.json").read_text())
    channel = NetworkConfig(**{**meta["network"], "norm": "channel"})
    net = build_segmentation_net(channel, len(meta["labels"]) + 1)
    odd = save_model(tmp_path / "channel_norm", net.state_dict(), {**{k: v for k, v in meta.items() if k not in (
        "format", "format_version", "weights_sha256")}, "network": channel.to_dict()})
    with pytest.raises(PGLError, match=re.escape(str(odd)) + r": .*--norm channel.*cannot express"):
        export_model(odd, tmp_path / "b")
    assert not (tmp_path / "b").exists()
