"""The one place a command turns ``--device`` into a `torch.device` (training, needle, eval-loss).

``auto`` is CUDA when available, else CPU; a CUDA device asked for where there is none, or a name torch does
not know, is a `ConfigError` that names the fix. Under torchrun each process takes its local GPU.
"""

from __future__ import annotations

import torch

from lcdata.errors import ConfigError


def pick_device(device: str = "auto", local_rank: int | None = None) -> torch.device:
    """The `torch.device` for ``device`` (auto | cpu | cuda | cuda:N). With ``local_rank`` (a torchrun process),
    'auto' and 'cuda' mean that process's GPU ``cuda:<local_rank>``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device!r} but CUDA is not available here; use --device cpu")
    try:
        if device == "cuda" and local_rank is not None:
            return torch.device(f"cuda:{local_rank}")
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
