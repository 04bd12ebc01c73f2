"""The environment a report was measured on. A bitwise result holds on this fingerprint only: another torch
release, thread count, CPU instruction set, GPU, TF32 setting or batch shape may pick other kernels and other
summation orders, and so other bits."""

from __future__ import annotations

import platform

import torch

BITWISE_SCOPE = ("bitwise results hold for this fingerprint only: another torch release, thread count, CPU "
                 "capability, device, TF32/matmul setting or tensor shape may round differently")


def cpu_name() -> str:
    """The CPU's model name where the system says it (Linux: /proc/cpuinfo), else the architecture."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint(device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> dict:
    device = torch.device(device)
    cuda = device.type == "cuda"
    capability = None
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # very old releases had no such call; the report then says "unknown"
        capability = "unknown"
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "machine": platform.machine(),
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cpu_capability": capability,
        "cuda_version": torch.version.cuda if cuda else None,
    }


def describe(print_: dict) -> str:
    """One line: 'torch 2.14.1, cpu (x86_64, AVX512), 2 threads, float32, matmul precision highest'."""
    parts = [f"torch {print_['torch']}", f"{print_['device']} ({print_['device_name']}, {print_['cpu_capability']})",
             f"{print_['threads']} threads"]
    if print_.get("dtype"):
        parts.append(print_["dtype"])
    parts.append(f"matmul precision {print_['float32_matmul_precision']}")
    if print_["deterministic_algorithms"]:
        parts.append("deterministic algorithms")
    if print_["device"].startswith("cuda") and print_["cuda_matmul_allow_tf32"]:
        parts.append("TF32 allowed")
    return ", ".join(parts)
