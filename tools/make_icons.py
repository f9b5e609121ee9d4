"""Draw the extension and module icons (128x128 PNG) and the screenshot from a phantom and its labels.

Usage: python tools/make_icons.py [SEGMENTATION.nii.gz]  (with a segmentation of phantom 0 from `pgl segment`,
the screenshot shows it; otherwise the phantom's reference labels)
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from pgl_engine.data.labels import label_table  # noqa: E402
from pgl_engine.phantoms.tuning import LABELS, make_phantom  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def overlay(image, labels, alpha=0.55):
    rgb = np.repeat(((np.clip(image, -200, 300) + 200) / 500.0)[..., None], 3, axis=2)
    for value, entry in label_table(LABELS).items():
        mask = labels == int(value)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.array(entry["color"]) / 255.0
    return rgb


def axial(volume, z):
    return volume[:, :, z].T[::-1, ::-1]  # radiological display: patient right on the left, anterior up


def save_icon(path, rgb, text=None):
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(rgb, interpolation="bilinear")
    if text:
        ax.text(0.5, 0.08, text, color="white", fontsize=14, fontweight="bold", ha="center", transform=ax.transAxes)
    ax.axis("off")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    case = make_phantom(0, spacing_scale=2.0)
    labels = case.labels if len(sys.argv) < 2 else np.asarray(nib.load(sys.argv[1]).dataobj)
    z = int(np.argmax([(case.labels[:, :, k] > 0).sum() for k in range(case.labels.shape[2])]))
    crop = slice(10, -10)
    image, seg = axial(case.image, z)[crop, crop], axial(labels, z)[crop, crop]
    save_icon(ROOT / "Resources" / "PGL.png", overlay(image, seg), "PGL")
    save_icon(ROOT / "PGLPretrain" / "Resources" / "Icons" / "PGLPretrain.png", overlay(image, np.zeros_like(seg)), "PT")
    save_icon(ROOT / "PGLSegmentation" / "Resources" / "Icons" / "PGLSegmentation.png", overlay(image, seg), "SEG")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), dpi=100)
    for ax, (title, lab) in zip(axes, [("phantom CT", np.zeros_like(seg)), ("segmentation", seg)]):
        ax.imshow(overlay(image, lab))
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(ROOT / "Resources" / "Screenshots" / "pgl_segmentation.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
