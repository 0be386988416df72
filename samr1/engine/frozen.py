"""The reward model as the engines hold it: in eval mode, on one device, with no gradients."""

from __future__ import annotations

from typing import Any

import torch


def frozen_on(model: Any, device: str | torch.device | None) -> tuple[Any, torch.device]:
    """``(model, device)``: ``model`` in eval mode with every parameter's ``requires_grad`` off, moved to
    ``device`` when given and different (default: the device its parameters are on). SAM is frozen in
    SAM-R1's loop; nothing ever back-propagates into it."""
    here = next(model.parameters()).device
    dev = torch.device(device) if device is not None else here
    model = model.eval()
    if dev != here:
        model = model.to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, dev
