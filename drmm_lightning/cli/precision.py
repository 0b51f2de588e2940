"""The run's numeric precision: `precision=auto|bf16|fp32` sets the trainer's precision and the
model's memory layout together.

auto (the default) is bf16 autocast with channels-last memory where the hardware computes bf16
natively (CUDA devices that support it; CPUs with AVX-512 BF16 or AMX), else fp32. bf16 +
channels-last ran 1.7x faster than fp32 on this project's CPU and was not worse over three seeds
(docs/benchmarks.md). On a CPU without native bf16 the arithmetic is emulated and slower than
fp32, hence the fallback. `trainer.precision` and `model.channels_last` can still be set apart.

The environment variable DRMM_NATIVE_BF16=0 (or 1) overrides the detection: auto then resolves
as on a device without (with) native bf16, in every process that inherits it. It is how the
test suite is timed as on an fp32-only machine (README, "Tests"); `precision=bf16|fp32` named
explicitly are unaffected.
"""

from __future__ import annotations

import os
import warnings

import torch

PRECISIONS = ("auto", "bf16", "fp32")
NATIVE_BF16_ENV = "DRMM_NATIVE_BF16"
TRAINER_PRECISION = {"bf16": "bf16-mixed", "fp32": "32-true"}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def bf16_supported(accelerator: str) -> bool:
    """Whether `accelerator` (the trainer's: cpu, gpu, cuda, auto) runs bf16 natively;
    $DRMM_NATIVE_BF16 (0 or 1), where set, answers instead."""
    forced = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if forced:
        if forced not in ("0", "1"):
            raise ValueError(f"{NATIVE_BF16_ENV}={forced!r}; valid: 0 (no native bf16), 1.")
        return forced == "1"
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def effective(precision: str, accelerator: str) -> str:
    """'bf16' or 'fp32': what `precision` means on `accelerator`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; valid: {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return "bf16" if bf16_supported(str(accelerator)) else "fp32"
    return precision


def trainer_precision(precision: str, accelerator: str) -> str:
    """Lightning's `Trainer(precision=...)` for the run's `precision`."""
    return TRAINER_PRECISION[effective(precision, accelerator)]


def channels_last(precision: str, accelerator: str) -> bool:
    """Channels-last memory goes with bf16 (it is what made bf16 fast; docs/benchmarks.md)."""
    return effective(precision, accelerator) == "bf16"


def describe(precision: str, accelerator: str) -> str:
    """Why `precision` chose what it did, for the log."""
    if precision != "auto":
        return f"precision={precision}"
    if os.environ.get(NATIVE_BF16_ENV, "").strip():
        chose = effective(precision, accelerator)
        return f"precision=auto: {chose}, as {NATIVE_BF16_ENV}={os.environ[NATIVE_BF16_ENV]} says"
    if effective(precision, accelerator) == "bf16":
        return "precision=auto: this device computes bf16 natively; precision=fp32 to turn it off"
    return "precision=auto: this device has no native bf16 (it would be emulated, slower)"


def emulation_warning(precision: str, trainer_precision: str, accelerator: str) -> str | None:
    """Why an explicit bf16 request runs emulated (about 3x slower than fp32 on a CPU without
    native bf16), or None where bf16 is native or not asked for; `precision=auto` chooses
    for the device, so it is never warned of."""
    asked = precision == "bf16" or str(trainer_precision).startswith("bf16")
    if not asked or bf16_supported(str(accelerator)):
        return None
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    device = "this GPU does not" if on_gpu else "this CPU (no AVX-512 BF16 or AMX) does not"
    return (
        f"precision={precision} (trainer.precision={trainer_precision}): {device} compute bf16 "
        "natively, so it is emulated, about 3x slower than fp32. Use precision=auto (bf16 only "
        "where it is native, fp32 here) or precision=fp32."
    )


_warned: set[str] = set()


def warn_emulated_bf16(precision: str, trainer_precision: str, accelerator: str) -> None:
    """Warn, once per process, that an explicit bf16 request will run emulated
    (emulation_warning)."""
    message = emulation_warning(precision, trainer_precision, accelerator)
    if message and message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=2)
