"""The picture of an explanation (``crossiqa-pyiqa explain``): the photo, its quality map, the family strengths.

One PNG per image, three panels: the photo as read; the photo in grey under the quality map
(a diverging colour scale centred on the score: red is worse than the score, green better;
colour bar in score units); the six family strengths as bars in [0, 1] (exposure, contrast
and colour labelled with their direction: dark / bright, low / high, faded / vivid / cast). Drawn with matplotlib's object API on the Agg canvas (no pyplot, no
display, safe in threads), written atomically.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import torch

#: Longest side of the photo as drawn (the figure stays a few hundred kB for any photo).
DISPLAY_SIDE = 768


def _display_array(image: torch.Tensor) -> np.ndarray:
    """(H, W, 3) float in [0, 1], downsized (area) so that its longer side is at most DISPLAY_SIDE."""
    x = image.detach().float().cpu()
    if x.dim() == 4:
        x = x[0]
    h, w = x.shape[-2:]
    scale = DISPLAY_SIDE / max(h, w)
    if scale < 1:
        x = torch.nn.functional.interpolate(x[None], size=(max(1, round(h * scale)), max(1, round(w * scale))),
                                            mode='area')[0]
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def render(explanation: Any, image: torch.Tensor, title: str, path: str | os.PathLike) -> str:
    """Write the three-panel PNG of ``explanation`` (an ``Explanation`` with a quality map) for ``image``."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as error:  # pragma: no cover - matplotlib is a dependency
        raise RuntimeError('crossiqa-pyiqa explain draws with matplotlib: pip install matplotlib') from error
    from crossiqa_pyiqa.degradations.families import FAMILIES

    photo = _display_array(image)
    h, w = explanation.image_size
    fig = Figure(figsize=(16, 4.8), dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 1.15, 0.75])
    ax = fig.add_subplot(grid[0])
    ax.imshow(photo, extent=(0, w, h, 0))
    ax.set_title('photo', fontsize=10)
    ax.axis('off')

    ax = fig.add_subplot(grid[1])
    grey = photo.mean(axis=2)
    ax.imshow(grey, cmap='gray', extent=(0, w, h, 0), vmin=0, vmax=1)
    qmap, score = explanation.quality_map, explanation.score
    if qmap is not None:
        spread = max(float(np.abs(qmap - score).max()), 1.0)
        cell = explanation.map_cell
        im = ax.imshow(qmap, cmap='RdYlGn', vmin=score - spread, vmax=score + spread, alpha=0.55,
                       extent=(0, qmap.shape[1] * cell, qmap.shape[0] * cell, 0), interpolation='nearest')
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label(f'local quality ({explanation.metric} units; map mean = score {score:.1f})', fontsize=8)
        bar.ax.axhline(score, color='black', linewidth=1)
        ax.set_title(f'quality map: {cell} px cells, {explanation.map_window} px windows', fontsize=10)
    ax.axis('off')

    ax = fig.add_subplot(grid[2])
    names = list(FAMILIES)
    labels = [f'{n} ({explanation.directions[n]})' if explanation.directions.get(n) else n for n in names]
    values = [explanation.families[n] for n in names]
    top = explanation.top_family
    colours = ['#c0392b' if n == top else '#7f8c8d' for n in names]
    ax.barh(range(len(names))[::-1], values, color=colours)
    ax.set_yticks(range(len(names))[::-1])
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_xlabel('strength (0.2 ≈ library level 1, 1 ≈ level 5)', fontsize=8)
    for k, v in enumerate(values):
        ax.text(min(v + 0.02, 0.88), len(names) - 1 - k, f'{v:.2f}', va='center', fontsize=8)
    ax.set_title('what is wrong (diagnosis heads)', fontsize=10)
    fig.suptitle(title, fontsize=11)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.explain-', suffix='.png')
    os.close(fd)
    try:
        fig.savefig(tmp, format='png')
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
