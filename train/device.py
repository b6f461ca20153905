"""Where the workstation runs the encoder: `--device auto|cpu|cuda|mps`, and batch sizes that suit it.

Everything stays float32 on every device (TF32 is switched off on CUDA), so an embedding computed
on one device is within about 1e-4 of another's: below the float16 step the cache stores
(about 5e-4 relative), which is why the embedding cache may be shared across devices. Its key names
the numeric mode ("fp32"); a mixed-precision mode, if one is ever added, gets caches of its own.
"""

from __future__ import annotations

import torch

from train.options import DEVICES

NUMERICS = "fp32"
ENCODE_BATCH = {"cpu": 8, "cuda": 64, "mps": 32}  # windows per encoder call (no gradients)


class DeviceError(RuntimeError):
    """A device that was asked for but is not there; the message says what is."""


def _available() -> dict[str, bool]:
    mps = getattr(torch.backends, "mps", None)
    return {"cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available()), "cpu": True}


def resolve_device(name: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu; an explicit device that is missing is an error."""
    if name not in DEVICES:
        raise DeviceError(f"--device {name!r}: expected one of {', '.join(DEVICES)}")
    available = _available()
    if name == "auto":
        name = next(device for device in ("cuda", "mps", "cpu") if available[device])
    elif not available[name]:
        present = ", ".join(device for device, ok in available.items() if ok)
        raise DeviceError(f"--device {name}: not available on this machine (available: {present}); "
                          "use --device auto or cpu")
    if name == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 as on the CPU: the cache stays shareable
        torch.backends.cudnn.allow_tf32 = False
    return torch.device(name)


def encode_batch(device: torch.device) -> int:
    return ENCODE_BATCH[device.type]
