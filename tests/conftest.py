"""Shared test helpers: tests that need pyiqa's downloadable classic-metric weights skip without them.

pyiqa downloads niqe's and brisque's parameter files on first use into
``$TORCH_HOME/hub/pyiqa`` (torch's hub folder, default ``~/.cache/torch/hub/pyiqa``). The
README's test command runs offline on a fresh clone, so a test that scores with those
metrics checks for the files first and skips, naming them, when they are absent. CI
(``.ci/run``) points ``TORCH_HOME`` at ``../shared/data/torch_home``, where they are, so it
runs them all.
"""
from __future__ import annotations

import importlib
import os
from urllib.parse import urlparse

import pytest


def missing_classic_weights(*metrics: str) -> list[str]:
    """Paths of the parameter files of pyiqa metrics (``niqe``, ``brisque``) that are not in pyiqa's cache."""
    import torch

    cache = os.path.join(torch.hub.get_dir(), 'pyiqa')  # pyiqa.utils.download_util.DEFAULT_CACHE_DIR
    missing = []
    for metric in metrics:
        urls = getattr(importlib.import_module(f'pyiqa.archs.{metric}_arch'), 'default_model_urls', {})
        name = os.path.basename(urlparse(urls['url']).path)
        path = os.path.join(cache, name)
        if not os.path.isfile(path):
            missing.append(path)
    return missing


@pytest.fixture
def classic_weights():
    """``classic_weights('niqe', 'brisque')`` skips the test when pyiqa's parameter files are not cached."""
    def need(*metrics: str) -> None:
        missing = missing_classic_weights(*metrics)
        if missing:
            pytest.skip(f'needs pyiqa\'s downloadable weights of {", ".join(metrics)}, not found offline: '
                        f'{", ".join(missing)} (set TORCH_HOME to a torch home that holds hub/pyiqa/, as .ci/run does)')
    return need
