"""Fragments: a grid of small crops tiled into one mosaic (after FAST-VQA, as GRepQ uses them).

A mosaic keeps pixels at their native scale (no resizing, so quality is untouched)
while covering the whole image. All versions of one image share the crop positions,
so the versions of a view differ only by their distortion; a second view is an
independent draw of positions plus random flips. Sampling is one ``gather``, batched
over images and versions.
"""
from __future__ import annotations

import torch


def _cell_starts(length: int, grid: int, size: int) -> tuple[torch.Tensor, int]:
    """Top-left corner of each grid cell (clamped inside the image) and the free play within a cell."""
    cell = length // grid
    starts = torch.tensor([min(cell * i, length - size) for i in range(grid)])
    return starts, max(cell - size, 0)


def sample_fragments(versions: torch.Tensor, generator: torch.Generator | None = None, grid: int = 7,
                     size: int = 32) -> torch.Tensor:
    """(B, V, C, H, W) → (B, V, C, grid·size, grid·size) mosaics.

    Cell (i, j) of the mosaic is a ``size``×``size`` crop from cell (i, j) of a ``grid``×``grid``
    partition of the image, at a random offset inside the cell: one offset per image and
    cell, shared by the V versions. Cells smaller than ``size`` give overlapping crops.
    """
    if versions.dim() != 5:
        raise ValueError(f'versions must be (B, V, C, H, W), got {tuple(versions.shape)}')
    b, v, c, h, w = versions.shape
    if h < size or w < size:
        raise ValueError(f'Images of {h}x{w} are smaller than one {size}x{size} fragment')
    ys, play_y = _cell_starts(h, grid, size)
    xs, play_x = _cell_starts(w, grid, size)
    off_y = torch.randint(0, play_y + 1, (b, grid, grid), generator=generator)
    off_x = torch.randint(0, play_x + 1, (b, grid, grid), generator=generator)
    side = grid * size
    cell = torch.arange(side) // size  # cell index of each mosaic row / column
    within = torch.arange(side) % size
    src_y = ys[cell][None, :, None] + off_y[:, cell[:, None], cell[None, :]] + within[None, :, None]
    src_x = xs[cell][None, None, :] + off_x[:, cell[:, None], cell[None, :]] + within[None, None, :]
    index = (src_y * w + src_x).reshape(b, 1, side * side).to(versions.device)
    flat = versions.reshape(b, v * c, h * w)
    out = torch.gather(flat, 2, index.expand(b, v * c, side * side))
    return out.reshape(b, v, c, side, side)


def random_flip(views: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Independent horizontal and vertical flips per image of (B, V, C, H, W), the same for its V versions."""
    b = views.shape[0]
    shape = (b,) + (1,) * (views.dim() - 1)
    flip_h = (torch.rand(b, generator=generator) < p).reshape(shape).to(views.device)
    flip_v = (torch.rand(b, generator=generator) < p).reshape(shape).to(views.device)
    views = torch.where(flip_h, views.flip(-1), views)
    return torch.where(flip_v, views.flip(-2), views)
