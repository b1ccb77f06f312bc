"""Unlabelled image crops for pretext training, indexed by global sample number.

Every sample is a pure function of ``(seed, index)``: which image, where the crop
is, whether it is flipped. A run therefore resumes exactly where it stopped by
starting the sampler at ``step * global_batch`` — no data-loader state to save.
"""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from pyiqa.utils.img_util import scandir_images
from torch.utils.data import Dataset, Sampler

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')


def list_images(folders: Sequence[str]) -> list[str]:
    """All images under the folders (recursive), sorted; errors name a missing or empty folder."""
    paths: list[str] = []
    for folder in folders:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'Training image folder not found: {folder}')
        found = [p for p in scandir_images(folder) if p.lower().endswith(IMAGE_SUFFIXES)]
        if not found:
            raise ValueError(f'No images ({", ".join(IMAGE_SUFFIXES)}) found under {folder}')
        paths.extend(found)
    return paths


class RandomCropDataset(Dataset):
    """Random ``crop_size`` crops (with horizontal flips) of a list of images, as uint8 CHW tensors.

    ``cache_images`` decodes every image once up front; with fork-started workers
    the cache is shared copy-on-write.
    """

    def __init__(self, paths: Sequence[str], crop_size: int, seed: int = 0, cache_images: bool = True) -> None:
        if not paths:
            raise ValueError('RandomCropDataset needs at least one image')
        self.paths = list(paths)
        self.crop_size = crop_size
        self.seed = seed
        self.cache = [self._read(p) for p in self.paths] if cache_images else None

    def _read(self, path: str) -> np.ndarray:
        with Image.open(path) as img:
            arr = np.asarray(img.convert('RGB'))
        if min(arr.shape[:2]) < self.crop_size:
            raise ValueError(f'Image {path} is {arr.shape[1]}x{arr.shape[0]}, smaller than the '
                             f'{self.crop_size}px training crop; remove it or lower crop_size.')
        return arr

    def __len__(self) -> int:  # the sampler decides how many samples are drawn
        return 2 ** 62

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, index])
        k = int(rng.integers(len(self.paths)))
        img = self.cache[k] if self.cache is not None else self._read(self.paths[k])
        h, w = img.shape[:2]
        y = int(rng.integers(h - self.crop_size + 1))
        x = int(rng.integers(w - self.crop_size + 1))
        crop = img[y:y + self.crop_size, x:x + self.crop_size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)


class StepSampler(Sampler[int]):
    """Global sample indices for steps ``start_step, start_step+1, …`` of one rank.

    Step ``s`` of rank ``r`` takes indices ``(s * world + r) * batch + [0, batch)``:
    disjoint across ranks and steps, identical after a resume.
    """

    def __init__(self, batch_size: int, start_step: int, total_steps: int, rank: int = 0, world_size: int = 1) -> None:
        self.batch_size, self.start_step, self.total_steps = batch_size, start_step, total_steps
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.total_steps):
            base = (step * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)
