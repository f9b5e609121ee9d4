"""The MONAI Bundle of a segmentation model, as plain data: `configs/inference.json` and `configs/metadata.json`.

Everything here is MONAI or torch: the network is MONAI's UNet followed by the head as torch layers, the
preprocessing and postprocessing are MONAI transforms, so the bundle runs where pgl_engine is not installed.
It reproduces `pgl segment` (inference/segmentation.py): RAS, resampling to the model's spacing on an axis-aligned
grid, the HU window clipped to [0, 1], a Gaussian sliding window at the training patch size, and the class logits
interpolated linearly back onto each input's grid before the arg-max.
"""
from __future__ import annotations

from ..config import NetworkConfig
from ..errors import PGLError

SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
# pgl's norms as (MONAI UNet norm, head layer); "channel" normalises each voxel over its channels, which no MONAI or
# torch layer does on channel-first volumes
NORMS = {"instance": ("INSTANCE", "torch.nn.InstanceNorm3d({c}, affine=True)"),
         "batch": ("BATCH", "torch.nn.BatchNorm3d({c})"),
         "none": (None, "torch.nn.Identity()")}
OUTPUT_POSTFIX = "seg"  # SaveImaged writes <scan name>_seg.nii.gz, as the model zoo's bundles do


def check_expressible(network: NetworkConfig, where: str) -> None:
    """Refuse a network that the bundle cannot build from MONAI and torch layers."""
    if network.norm not in NORMS:
        raise PGLError(f"{where}: its network uses --norm {network.norm}, which has no MONAI or torch layer, so a "
                       f"MONAI Bundle cannot express it. Fine-tune again with --norm "
                       f"{', '.join(NORMS)} to export it.")


def network_items(network: NetworkConfig, num_classes: int) -> dict:
    """Config items building the network: `network_def` is Sequential(backbone=UNet, head=...), so its state dict
    has the keys of pgl's SegmentationNet."""
    check_expressible(network, "this model")
    monai_norm, head_norm = NORMS[network.norm]
    c = network.feature_channels
    return {
        "network_backbone": {"_target_": "monai.networks.nets.UNet", "spatial_dims": 3, "in_channels": 1,
                             "out_channels": c, "channels": list(network.channels),
                             "strides": list(network.strides), "num_res_units": network.num_res_units,
                             "norm": monai_norm},
        "network_head": f"$torch.nn.Sequential({head_norm.format(c=c)}, torch.nn.PReLU(), "
                        f"torch.nn.Conv3d({c}, {num_classes}, kernel_size=1))",
        "network_def": "$torch.nn.Sequential(collections.OrderedDict(backbone=@network_backbone, "
                       "head=@network_head))",
    }


def class_values(labels: dict) -> list[int]:
    """The label value of each output class: background 0, then the model's labels in increasing order (as in
    `pgl segment`)."""
    return [0] + sorted(int(k) for k in labels)


def inference_config(meta: dict) -> dict:
    """configs/inference.json for a model's metadata (pgl_model.json)."""
    lo, hi = (float(v) for v in meta["hu_window"])
    values = class_values(meta["labels"])
    key = {"keys": "image"}
    postprocessing = [
        # logits back on the input's grid (linear, as inference/labels_back.py does), then the arg-max there
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]
    if values != list(range(len(values))):
        postprocessing.append({"_target_": "MapLabelValued", "keys": "pred", "orig_labels": list(range(len(values))),
                               "target_labels": values})
    one_piece = [int(v) for v in meta.get("one_piece_labels", [])]
    # `pgl segment`'s default: the largest piece of each label that was one piece in training (MONAI makes the other
    # pieces background; `pgl segment` gives them the label around them)
    if one_piece:
        postprocessing.append({"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "applied_labels": one_piece,
                               "is_onehot": False, "independent": True, "connectivity": None})
    postprocessing.append({"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
                           "output_postfix": OUTPUT_POSTFIX, "output_dtype": "$numpy.uint8", "resample": False,
                           "separate_folder": False, "print_log": False})
    return {
        "imports": ["$import collections", "$import glob", "$import os", "$import sys"],
        # the bundle's folder: MONAI's runner puts it at sys.path[1] before it runs (ConfigWorkflow.run), MONAI
        # Label sets it itself; give --bundle_root DIR where neither applies
        "bundle_root": "$next((p for p in sys.path[1:2] if os.path.isfile(os.path.join(p, 'models', 'model.pt'))), "
                       "'.')",
        "dataset_dir": "/workspace/data",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*'))))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        **network_items(NetworkConfig.from_dict(meta["network"]), len(values)),
        "network": "$@network_def.to(@device)",
        "ckpt_path": "$os.path.join(@bundle_root, 'models', 'model.pt')",
        "model_grid": model_grid_expression(meta["spacing"]),
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", **key, "image_only": True},
            {"_target_": "EnsureChannelFirstd", **key},
            {"_target_": "Orientationd", **key, "axcodes": "RAS"},
            # the window maps linearly first, so that padding with 0 is padding with its low end (as pgl fills);
            # it is clipped after resampling, as in pgl
            {"_target_": "ScaleIntensityRanged", **key, "a_min": lo, "a_max": hi, "b_min": 0.0, "b_max": 1.0,
             "clip": False},
            # a plain function (not invertible, so Invertd passes it by): the grid to resample onto, and the scan's
            # voxels all ones
            "$lambda d: {**d, 'model_grid': @model_grid(d['image']), 'inside': torch.ones_like(d['image'])}",
            # ITK, which pgl resamples with, repeats the edge voxel within half a voxel of the scan and fills beyond:
            # one repeated voxel for the first, the nearest voxel of the ones (0 beyond half a voxel) for the second
            {"_target_": "BorderPadd", **key, "spatial_border": 1, "mode": "replicate"},
            {"_target_": "ResampleToMatchd", "keys": ["image", "inside"], "key_dst": "model_grid",
             "mode": ["bilinear", "nearest"], "padding_mode": "zeros", "dtype": "$torch.float32"},
            {"_target_": "MaskIntensityd", **key, "mask_key": "inside"},
            {"_target_": "DeleteItemsd", "keys": ["model_grid", "inside"]},
            {"_target_": "ScaleIntensityRanged", **key, "a_min": 0.0, "a_max": 1.0, "b_min": 0.0, "b_max": 1.0,
             "clip": True},
            {"_target_": "EnsureTyped", **key, "dtype": "$torch.float32"},
        ]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [int(s) for s in meta["patch_size"]],
                    "sw_batch_size": 4, "overlap": 0.5, "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing},
        # no ignite evaluator: a plain loop needs nothing beyond MONAI, torch and nibabel
        "run": [
            "$@network.load_state_dict(torch.load(@ckpt_path, map_location=@device, weights_only=True))",
            "$@network.eval()",
            "$torch.set_grad_enabled(False)",
            # each scan's results are dropped once saved (a deque of length 0 keeps nothing)
            "$collections.deque((@postprocessing(item) for batch in @dataloader for item in "
            "monai.data.decollate_batch({**batch, 'pred': @inferer(batch['image'].to(@device), @network)})), "
            "maxlen=0)",
        ],
    }


def model_grid_expression(spacing) -> str:
    """A config expression: the function giving the empty image on `pgl segment`'s grid for an image (imaging.
    ras_grid_covering): axis-aligned RAS at `spacing`, centred on the box around the image's voxel extent, with as
    many voxels as cover it. MONAI's Spacingd aligns its grid otherwise, and a window-normalised network's output
    depends on where its windows fall. (No `@` operator: the config reads `@` as a reference.)"""
    s = ", ".join(repr(float(v)) for v in spacing)
    return ("$lambda image: [a := image.affine.to(torch.float64), s := torch.tensor([" + s + "], dtype=torch.float64), "
            "c := torch.matmul(a[:3, :3], torch.cartesian_prod(*[torch.tensor([-0.5, n - 0.5], dtype=torch.float64) "
            "for n in image.shape[1:]]).T) + a[:3, 3:], lo := c.min(1).values, hi := c.max(1).values, "
            "n := torch.clamp(torch.ceil((hi - lo) / s - 1e-6), min=1), "
            "monai.data.MetaTensor(torch.zeros((1, *n.long().tolist())), affine=torch.cat([torch.cat([torch.diag(s), "
            "((lo + hi) / 2 - (n - 1) / 2 * s)[:, None]], 1), torch.tensor([[0.0, 0.0, 0.0, 1.0]], "
            "dtype=torch.float64)]))][-1]")
