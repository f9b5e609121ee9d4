"""Inference paths: one pass and tiles agree exactly for window-independent networks (batch, channel or no
normalisation), the sliding window stays for instance-normalised ones, and bf16 is chosen only where the CPU computes it natively."""
import numpy as np
import pytest
import torch
from conftest import SEG_NETWORK, smooth_volume

from pgl_engine.config import NetworkConfig
from pgl_engine.errors import PGLError
from pgl_engine.inference.sliding_window import predict_logits, receptive_margin, whole_volume_logits
from pgl_engine.models.networks import build_segmentation_net
from pgl_engine.training.precision import inference_dtype, native_bf16_in

CPU = torch.device("cpu")


def window_independent_net(norm="batch"):
    torch.manual_seed(0)
    net = build_segmentation_net(NetworkConfig(**{**SEG_NETWORK, "norm": norm}), 4).eval()
    with torch.no_grad():  # running statistics as after training, not the identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.parametrize("norm", ["batch", "channel", "none"])
def test_tiles_with_the_measured_margin_give_the_one_pass_result(norm):
    net = window_independent_net(norm)
    volume = torch.from_numpy(smooth_volume((70, 36, 30)))[None, None]
    with torch.inference_mode():
        whole = whole_volume_logits(net, volume, CPU, torch.float32, budget_bytes=1e12)
        # a budget of a few slices forces many tiles along the longest axis
        tiled = whole_volume_logits(net, volume, CPU, torch.float32, budget_bytes=20 * 36 * 32 * 20 * 8)
    assert whole.shape == (1, 4, 70, 36, 30)
    assert torch.allclose(whole, tiled, atol=1e-5), (whole - tiled).abs().max()


@pytest.mark.parametrize("norm", ["batch", "channel"])
def test_the_margin_covers_what_an_output_voxel_depends_on(norm):
    net = window_independent_net(norm)
    margin = receptive_margin(net, 4)
    assert margin % 4 == 0
    x = torch.rand(1, 1, 96, 8, 8, requires_grad=True)
    net(x)[:, :, 48].sum().backward()
    reach = (x.grad[0, 0].abs().sum((1, 2)) > 0).nonzero().flatten()
    assert margin >= max(48 - int(reach.min()), int(reach.max()) - 48) > 0


def test_a_too_small_margin_would_be_caught(monkeypatch):
    """The tile test above fails when the margin is short: tiles without enough context differ from one pass."""
    import pgl_engine.inference.sliding_window as inference

    monkeypatch.setattr(inference, "receptive_margin", lambda network, divisor: divisor)
    net = window_independent_net()
    volume = torch.from_numpy(smooth_volume((70, 36, 30)))[None, None]
    with torch.inference_mode():
        whole = whole_volume_logits(net, volume, CPU, torch.float32, budget_bytes=1e12)
        tiled = whole_volume_logits(net, volume, CPU, torch.float32, budget_bytes=20 * 36 * 32 * 20 * 8)
    assert (whole - tiled).abs().max() > 1e-4


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_window_independent_models_use_the_sliding_window_unless_one_pass_is_asked(norm):
    from monai.inferers import sliding_window_inference

    net = window_independent_net(norm)
    volume = smooth_volume((40, 36, 32))
    windows = predict_logits(net, volume, (16, 16, 16), CPU, overlap=0.5, precision="fp32")
    with torch.inference_mode():
        theirs = sliding_window_inference(torch.from_numpy(volume)[None, None], (16, 16, 16), 4, net, 0.5,
                                          mode="gaussian")[0]
        whole = whole_volume_logits(net, torch.from_numpy(volume)[None, None], CPU, torch.float32, 1e12)[0]
    assert torch.allclose(windows, theirs, atol=1e-6)
    one_pass = predict_logits(net, volume, (16, 16, 16), CPU, precision="fp32", one_pass=True)
    assert torch.allclose(one_pass, whole, atol=1e-6)
    # the two differ: windows pad every patch's borders, one pass sees the whole context
    assert (one_pass - windows).abs().max() > 1e-3


def test_one_pass_is_refused_for_instance_normalised_networks():
    with pytest.raises(ValueError, match="one pass"):
        predict_logits(window_independent_net("instance"), smooth_volume((16, 16, 16)), (16, 16, 16), CPU,
                       one_pass=True)


def test_instance_normalised_models_keep_the_sliding_window():
    from monai.inferers import sliding_window_inference

    net = window_independent_net("instance")
    volume = smooth_volume((40, 36, 30))
    ours = predict_logits(net, volume, (16, 16, 16), CPU, overlap=0.5, precision="fp32")
    with torch.inference_mode():
        theirs = sliding_window_inference(torch.from_numpy(volume)[None, None], (16, 16, 16), 4, net, 0.5,
                                          mode="gaussian")[0]
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert not torch.allclose(ours, predict_logits(window_independent_net("batch"), volume, (16, 16, 16), CPU,
                                                   precision="fp32", one_pass=True), atol=1e-3)


def test_bf16_logits_stay_close_to_fp32():
    net = window_independent_net()
    volume = smooth_volume((40, 36, 32))
    full = predict_logits(net, volume, (16, 16, 16), CPU, precision="fp32", one_pass=True)
    half = predict_logits(net, volume, (16, 16, 16), CPU, precision="bf16", one_pass=True)
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
    import pgl_engine.training.precision as precision

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
    assert NetworkConfig.from_dict({**config.to_dict(), "norm": "channel"}).window_independent


def test_the_channel_norm_normalises_each_voxel_by_its_own_features():
    from pgl_engine.models.networks import ChannelNorm

    norm = ChannelNorm(6)
    x = torch.randn(2, 6, 5, 4, 3) * 3 + 1
    y = norm(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 5, 4, 3), atol=1e-5)
    assert torch.allclose(y.var(1, unbiased=False), torch.ones(2, 5, 4, 3), atol=1e-3)
    # a voxel's output does not change when every other voxel does
    other = x.clone()
    other[..., 1:] = torch.randn_like(other[..., 1:]) * 10
    assert torch.allclose(norm(other)[..., 0], y[..., 0], atol=1e-6)


def test_a_channel_normalised_unet_has_no_instance_norm_left():
    net = build_segmentation_net(NetworkConfig(**{**SEG_NETWORK, "norm": "channel"}), 3)
    kinds = {type(m).__name__ for m in net.modules()}
    assert "ChannelNorm" in kinds and not any("InstanceNorm" in k for k in kinds)
    assert not any("Norm" in type(m).__name__
                   for m in build_segmentation_net(NetworkConfig(**{**SEG_NETWORK, "norm": "none"}), 3).modules())


def test_an_unknown_norm_is_named():
    with pytest.raises(PGLError, match="--norm must be one of instance, batch, channel, none"):
        NetworkConfig(norm="group")
