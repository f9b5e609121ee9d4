"""Reduced precision: fp16 on CUDA, bf16 on CPUs that compute it natively, fp32 elsewhere."""
from __future__ import annotations

import functools
import platform
from contextlib import nullcontext
from pathlib import Path

import torch

from ..errors import PGLError

PRECISIONS = ("auto", "fp32", "bf16")
# CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic; without them bf16 is emulated and slower than fp32
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX); False where it cannot be told."""
    if platform.system() != "Linux":
        return False
    try:
        return native_bf16_in(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return False


def native_bf16_in(cpuinfo: str) -> bool:
    """Whether the first `flags` line of a /proc/cpuinfo text names a native bf16 instruction set."""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype the network computes in: fp32 when asked; with auto, fp16 on CUDA and bf16 on a CPU with
    native bf16; bf16 forces bf16 (on any CPU, e.g. to compare)."""
    if precision not in PRECISIONS:
        raise PGLError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def training_dtype(device: torch.device, precision: str = "auto", cpu_bf16: bool = True) -> torch.dtype:
    """The dtype training computes in under autocast: as inference_dtype, except that with auto a CPU keeps fp32
    unless `cpu_bf16` (the stage was measured to train as well in bf16); other devices (mps) have no autocast."""
    if device.type not in ("cuda", "cpu") or (precision == "auto" and device.type == "cpu" and not cpu_bf16):
        return torch.float32
    return inference_dtype(device, precision)


def autocast(device: torch.device, dtype: torch.dtype):
    """The autocast context computing in `dtype` on `device` (none for fp32)."""
    if dtype == torch.float32 or device.type not in ("cuda", "cpu"):
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)
