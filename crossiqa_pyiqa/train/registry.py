"""The task registry and the task interface (``PretextTask``), shared by every training task.

Task modules (``tasks.py``, ``grepq_task.py``) register their classes here with
:func:`register_task`; ``tasks.build_task`` builds one by name.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

TASK_REGISTRY: dict[str, Callable[[dict[str, Any]], 'PretextTask']] = {}


def register_task(name: str):
    def deco(cls):
        TASK_REGISTRY[name] = cls
        return cls
    return deco


class PretextTask(nn.Module):
    """Interface: ``model`` (the network to export), ``forward``, ``visualise``, ``export``."""

    model: nn.Module

    def forward(self, crops: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def visualise(self, crops: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """An image grid (3, H, W) in [0, 1] showing what the task learns, or None."""
        return None

    def export(self, path: str, info: dict[str, Any]) -> str:
        raise NotImplementedError
