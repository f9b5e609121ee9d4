"""Inference paths: one pass and tiles agree exactly for batch-normalised networks, the sliding window stays
for instance-normalised ones, and bf16 is chosen only where the CPU computes it natively."""
import numpy as np
import pytest
import torch
from conftest import SEG_NETWORK, smooth_volume

from pgl_engine.config import NetworkConfig
from pgl_engine.errors import PGLError
from pgl_engine.inference import predict_logits, receptive_margin, whole_volume_logits
from pgl_engine.networks import build_segmentation_net
from pgl_engine.precision import inference_dtype, native_bf16_in

CPU = torch.device("cpu")


def batch_normalised_net(norm="batch"):
    torch.manual_seed(0)
    net = build_segmentation_net(NetworkConfig(**{**SEG_NETWORK, "norm": norm}), 4).eval()
    with torch.no_grad():  # running statistics as after training, not the identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net


def test_tiles_with_the_measured_margin_give_the_one_pass_result():
    net = batch_normalised_net()
    volume = torch.from_numpy(smooth_volume((70, 36, 30)))[None, None]
    with torch.inference_mode():
        whole = whole_volume_logits(net, volume, CPU, torch.float32, budget_bytes=1e12)
        # a budget of a few slices forces many tiles along the longest axis
        tiled = whole_volume_logits(net, volume, CPU, torch.float32, budget_bytes=20 * 36 * 32 * 20 * 8)
    assert whole.shape == (1, 4, 70, 36, 30)
    assert torch.allclose(whole, tiled, atol=1e-5), (whole - tiled).abs().max()


def test_the_margin_covers_what_an_output_voxel_depends_on():
    net = batch_normalised_net()
    margin = receptive_margin(net, 4)
    assert margin % 4 == 0
    x = torch.rand(1, 1, 96, 8, 8, requires_grad=True)
    net(x)[:, :, 48].sum().backward()
    reach = (x.grad[0, 0].abs().sum((1, 2)) > 0).nonzero().flatten()
    assert margin >= max(48 - int(reach.min()), int(reach.max()) - 48) > 0


def test_a_too_small_margin_would_be_caught(monkeypatch):
    """The tile test above fails when the margin is short: tiles without enough context differ from one pass."""
    import pgl_engine.inference as inference

    monkeypatch.setattr(inference, "receptive_margin", lambda network, divisor: divisor)
    net = batch_normalised_net()
    volume = torch.from_numpy(smooth_volume((70, 36, 30)))[None, None]
    with torch.inference_mode():
        whole = whole_volume_logits(net, volume, CPU, torch.float32, budget_bytes=1e12)
        tiled = whole_volume_logits(net, volume, CPU, torch.float32, budget_bytes=20 * 36 * 32 * 20 * 8)
    assert (whole - tiled).abs().max() > 1e-4


def test_instance_normalised_models_keep_the_sliding_window():
    from monai.inferers import sliding_window_inference

    net = batch_normalised_net("instance")
    volume = smooth_volume((40, 36, 30))
    ours = predict_logits(net, volume, (16, 16, 16), CPU, overlap=0.5, precision="fp32")
    with torch.inference_mode():
        theirs = sliding_window_inference(torch.from_numpy(volume)[None, None], (16, 16, 16), 4, net, 0.5,
                                          mode="gaussian")[0]
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert not torch.allclose(ours, predict_logits(batch_normalised_net("batch"), volume, (16, 16, 16), CPU,
                                                   precision="fp32"), atol=1e-3)


def test_bf16_logits_stay_close_to_fp32():
    net = batch_normalised_net()
    volume = smooth_volume((40, 36, 32))
    full = predict_logits(net, volume, (16, 16, 16), CPU, precision="fp32")
    half = predict_logits(net, volume, (16, 16, 16), CPU, precision="bf16")
    assert half.dtype == torch.float32
    assert (half - full).abs().max() < 0.05 * full.abs().max()
    assert (half.argmax(0) == full.argmax(0)).float().mean() > 0.97


@pytest.mark.parametrize("device, native, asked, expected", [
    ("cpu", False, "auto", torch.float32),
    ("cpu", True, "auto", torch.bfloat16),
    ("cpu", True, "fp32", torch.float32),
    ("cpu", False, "bf16", torch.bfloat16),
    ("cuda", False, "auto", torch.float16),
    ("mps", True, "auto", torch.float32),
])
def test_the_precision_follows_the_device(monkeypatch, device, native, asked, expected):
    import pgl_engine.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert inference_dtype(torch.device(device), asked) == expected


def test_native_bf16_is_read_from_the_cpu_flags():
    assert native_bf16_in("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16\n")
    assert native_bf16_in("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not native_bf16_in("flags : fpu sse2 avx2 avx512f avx512bw\n")
    assert not native_bf16_in("")


def test_a_wrong_precision_is_named():
    with pytest.raises(PGLError, match="--precision"):
        inference_dtype(CPU, "fp8")


def test_models_saved_before_norm_existed_are_instance_normalised():
    config = NetworkConfig.from_dict({"feature_channels": 8, "channels": [8, 16, 32], "strides": [2, 2],
                                      "num_res_units": 1})
    assert config.norm == "instance" and not config.window_independent
    assert NetworkConfig.from_dict({**config.to_dict(), "norm": "batch"}).window_independent
