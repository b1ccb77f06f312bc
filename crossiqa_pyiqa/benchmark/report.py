"""Benchmark outputs: pyiqa's result CSV, Markdown tables and matplotlib figures."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    return str(value)


def triple(corr: dict[str, float] | None) -> str:
    """pyiqa's cell format ``PLCC/SRCC/KRCC`` (4 decimals)."""
    if not corr:
        return '-'
    return '/'.join(fmt(round(corr[k], 4) if math.isfinite(corr[k]) else float('nan')) for k in ('plcc', 'srcc', 'krcc'))


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(['---'] * len(header)) + '|']
    lines += ['| ' + ' | '.join(fmt(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def plot_efficient(path: str | os.PathLike, curves: dict[str, dict[str, list[float]]],
                   flat: dict[str, float] | None = None, title: str = '') -> None:
    """Median SRCC vs N with the inter-quartile band; ``curves[method][N] = per-repetition SRCCs``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    order = None
    for method, per_n in curves.items():
        labels = list(per_n)
        order = order or labels
        xs = np.arange(len(labels))
        q = np.array([np.nanquantile(per_n[n], [0.25, 0.5, 0.75]) for n in labels])
        ax.plot(xs, q[:, 1], marker='o', label=method)
        ax.fill_between(xs, q[:, 0], q[:, 2], alpha=0.2)
    for method, value in (flat or {}).items():
        ax.axhline(value, linestyle='--', linewidth=1, label=f'{method} (no training)', color='grey')
    if order:
        ax.set_xticks(np.arange(len(order)), order)
    ax.set_xlabel('labelled training images N')
    ax.set_ylabel('median SRCC (10 splits), IQR band')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scatter(path: str | os.PathLike, pred: np.ndarray, mos: np.ndarray, title: str, xlabel: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(pred, mos, s=6, alpha=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel('MOS')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_gaps(path: str | os.PathLike, gaps: dict[str, dict[str, dict[str, Any]]], baseline: str) -> None:
    """Forest plot: per type, each metric's L gap to ``baseline`` with its interval (``gaps[metric][type]``)."""
    plt = _pyplot()
    types = list(next(iter(gaps.values()), {}))
    fig, ax = plt.subplots(figsize=(6.4, 0.8 + 0.28 * len(types)))
    step = 0.8 / max(1, len(gaps))
    for k, (metric, per_type) in enumerate(gaps.items()):
        ys = np.arange(len(types)) + k * step
        mid = np.array([per_type[t]['gap'] for t in types])
        ci = np.array([per_type[t]['ci'] for t in types], dtype=float).reshape(-1, 2)
        ax.errorbar(mid, ys, xerr=np.abs(ci.T - mid), fmt='o', markersize=3, capsize=2, label=metric)
    ax.axvline(0, color='grey', linewidth=1)
    ax.set_yticks(np.arange(len(types)) + step * (len(gaps) - 1) / 2, types, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f'L(metric) - L({baseline}), mean over images, 95% interval')
    ax.grid(alpha=0.3, axis='x')
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
