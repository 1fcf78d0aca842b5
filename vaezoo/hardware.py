"""What the CPU can do: its model, its vector extensions, and whether it computes bfloat16 natively.

On an x86 CPU without ``avx512_bf16`` or ``amx_bf16``, oneDNN emulates bfloat16 with fp32 conversions around
every kernel, so ``precision: bf16`` trains several times slower than fp32 there; the trainer warns about it once
(:func:`bf16_warning`) and the benchmarks record it (:func:`cpu_info`). Only Linux's ``/proc/cpuinfo`` is read; on
other systems the flags are unknown and nothing is claimed.
"""

from __future__ import annotations

import functools
import platform
import statistics
from pathlib import Path

import torch

#: the flags that decide CPU speed for this library's kernels, in the order they are reported
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, frozenset[str] | None]:
    """(model name, flags of the first processor); flags ``None`` where they cannot be read."""
    try:
        text = Path(path).read_text()
    except OSError:
        return platform.processor() or platform.machine(), None
    model, flags = platform.machine(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == platform.machine():
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:  # "Features" on ARM
            flags = frozenset(value.split())
        if flags is not None and model != platform.machine():
            break
    return model, flags


def cpu_flags() -> frozenset[str] | None:
    return _cpuinfo()[1]


def native_bf16() -> bool | None:
    """Whether the CPU has bfloat16 arithmetic instructions (``None``: unknown, e.g. not Linux)."""
    flags = cpu_flags()
    if flags is None:
        return None
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)


def vector_extensions() -> list[str]:
    flags = cpu_flags() or frozenset()
    return [flag for flag in VECTOR_FLAGS if flag in flags]


def cpu_info() -> dict:
    """The machine line of a benchmark: CPU model, vector extensions, native bf16, torch version and threads."""
    model, flags = _cpuinfo()
    return {
        "cpu_model": model,
        "vector_extensions": vector_extensions(),
        "native_bf16": native_bf16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels torch dispatches to
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "flags_known": flags is not None,
    }


def machine_line(info: dict | None = None) -> str:
    """One line for the head of a table: ``CPU model; AVX2 AVX512F ...; native bf16: no; torch X; N threads``."""
    info = info or cpu_info()
    native = {True: "yes", False: "no", None: "unknown"}[info["native_bf16"]]
    extensions = " ".join(flag.upper() for flag in info["vector_extensions"]) or "none known"
    return (
        f"{info['cpu_model']}; {extensions}; native bf16: {native}; "
        f"torch {info['torch_version']}; {info['torch_threads']} threads"
    )


def bf16_warning(precision: str, device: torch.device) -> str | None:
    """The one-line warning for ``precision: bf16`` on a CPU that would emulate it, else ``None``."""
    if precision != "bf16" or device.type != "cpu" or native_bf16() is not False:
        return None
    return (
        f"precision bf16 on a CPU without native bfloat16 ({_cpuinfo()[0]}: no avx512_bf16/amx_bf16): it is emulated "
        "and slower than fp32; use --trainer.precision fp32"
    )


def default_cpu_precision() -> str:
    """The faster training precision on this CPU: bf16 only with AMX tiles (``amx_bf16``), else fp32.

    ``avx512_bf16`` alone is not enough: it speeds up dot products, but oneDNN's bf16 depthwise and BatchNorm paths
    convert to fp32 around every kernel: on an AVX-512 + AVX512_BF16 Xeon without AMX the ``cifar_small`` step took
    0.7 s in bf16 against 0.2-0.35 s in fp32 (benchmarks/compare_official.py, one shared 2-core machine)."""
    flags = cpu_flags() or frozenset()
    return "bf16" if "amx_bf16" in flags else "fp32"


#: the median convolution width (output channels) below which ``precision: auto`` keeps fp32 on AMX CPUs: at small
#: widths the conversions around every bf16 kernel cost as much as, or more than, its faster convolutions save.
#: Measured with benchmarks/compare_official.py and ``vaezoo benchmark`` on a 2-core AMX Xeon, 2 threads: the paper's
#: CIFAR-10 model (median 256 channels) trains 1.7x faster in bf16; the quickstart NVAE (median 32, widest 384) runs
#: at the same speed in both; ``cifar_small`` (median 6, widest 100: its output head) is slower in bf16. The median,
#: not the widest layer: one wide head does not make a model's convolutions wide.
AUTO_BF16_MIN_CHANNELS = 64


def auto_precision(device: torch.device, model: torch.nn.Module) -> tuple[str, str]:
    """``(precision, why)`` that ``precision: auto`` chooses for training ``model`` on ``device``: bf16 on a GPU that
    has it and on a CPU with AMX tiles (``amx_bf16``) when the median of the model's convolution widths (output
    channels; the lower median) is at least :data:`AUTO_BF16_MIN_CHANNELS`; fp32 everywhere else. A pure function of
    the machine and the architecture, so a resumed run chooses as the run it continues did."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{torch.cuda.get_device_name(device)} computes in bfloat16 natively"
        return "fp32", f"{torch.cuda.get_device_name(device)} has no native bfloat16"
    if device.type != "cpu":
        return "fp32", f"no bf16 rule for {device.type} devices"
    if default_cpu_precision() != "bf16":
        return "fp32", f"{_cpuinfo()[0]} has no AMX tiles (amx_bf16): bf16 would not be faster"
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    median = statistics.median_low(widths) if widths else 0
    if median < AUTO_BF16_MIN_CHANNELS:
        return "fp32", (f"the median convolution has {median} channels (bf16 pays from {AUTO_BF16_MIN_CHANNELS} on "
                        "AMX; below, its conversions cost as much as it saves)")  # fmt: skip
    return "bf16", f"AMX tiles (amx_bf16) and a median convolution of {median} channels"


def warn_emulated_bf16(precision: str, device: torch.device, console=None) -> str | None:
    """Print :func:`bf16_warning` as one line (on the rich ``console`` when given, else stderr); returns it."""
    message = bf16_warning(precision, device)
    if message is not None:
        if console is not None:
            console.print(f"[yellow]warning[/]: {message}", soft_wrap=True, highlight=False)
        else:
            import sys

            print(f"warning: {message}", file=sys.stderr)
    return message


#: device types a model can run on, and how torch says whether one is present
_DEVICE_BACKENDS = {
    "cuda": lambda: torch.cuda,
    "mps": lambda: torch.backends.mps,
    "xpu": lambda: getattr(torch, "xpu", None),
}


def check_device(name: str, option: str) -> None:
    """Refuse, in one line naming ``option``, a device that torch does not know or that this machine does not have
    (``cuda`` on a machine without a GPU, ``cuda:3`` with one GPU), before anything is built or written.
    ``auto`` always passes: it means the first accelerator if there is one, else the CPU."""
    from .errors import ConfigError

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"{option}: {name!r} is not a device (auto, cpu, cuda, cuda:1, mps, ...)") from exc
    if device.type == "cpu":
        return
    backend = _DEVICE_BACKENDS.get(device.type, lambda: None)()
    if backend is None:
        raise ConfigError(f"{option}: {name!r}: vaezoo runs on cpu, cuda, mps or xpu devices")
    if not backend.is_available():
        build = " (this torch is a CPU-only build)" if device.type == "cuda" and torch.version.cuda is None else ""
        raise ConfigError(f"{option}: {name!r}, but this machine has no {device.type} device{build}; use cpu or auto")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise ConfigError(f"{option}: {name!r}, but this machine has {count} {device.type} device(s) (0..{count - 1})")
