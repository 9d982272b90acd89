"""Mixed precision for the training step: autocast for the forward, a gradient scaler for float16."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Mapping

import torch
from torch import Tensor

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecision:
    """Autocast for the forward and, for float16, a gradient scaler (bfloat16 needs none).

    The trainer computes the loss and the KL outside `autocast`, in float32, so only the network's
    forward (and its backward) run in the lower precision. With ``amp=None`` everything is a no-op.
    """

    def __init__(self, amp: str | None, device: torch.device):
        self.dtype = AMP_DTYPES.get(amp or "")
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def backward_and_step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state, for the checkpoint (empty without a scaler)."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(dict(state))
