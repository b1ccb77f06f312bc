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
from torch.utils.data import Dataset, Sampler

from crossiqa_pyiqa.image_files import IMAGE_EXTENSIONS as IMAGE_SUFFIXES, find_images


def list_images(folders: Sequence[str]) -> list[str]:
    """All images under the folders (recursive), sorted; errors name a missing or empty folder."""
    paths: list[str] = []
    from crossiqa_pyiqa.paths import dataset_of, resolve

    for folder in folders:
        folder = resolve(folder)  # datasets/... under $CROSSIQA_HOME
        if not os.path.isdir(folder):
            name = dataset_of(folder)
            how = f': prepare it with `python scripts/prepare_data.py {name}`' if name else ''
            raise FileNotFoundError(f'Training image folder not found: {folder}{how}')
        found = find_images(folder)  # the allow-list shared with the CLI; skipped files are counted and named
        if not found:
            raise ValueError(f'No images ({", ".join(IMAGE_SUFFIXES)}) found under {folder}')
        paths.extend(found)
    return paths


class RandomCropDataset(Dataset):
    """Random ``crop_size`` crops (with horizontal flips) of a list of images, as uint8 CHW tensors.

    Images are read as a viewer shows them (``crossiqa_pyiqa.inputs``: EXIF orientation,
    16-bit, palette, alpha). One bad file never ends a long run: at start every image is
    checked (``cache_images``: decoded once, the cache shared copy-on-write by fork-started
    workers; otherwise its header and size are read), unreadable or too small ones are
    skipped and listed in ``skipped`` / :meth:`skip_summary`. A file that still fails
    when read later (changed on disk, truncated after its header) is skipped at read time:
    the next image is taken instead and the file is reported once per process.
    """

    def __init__(self, paths: Sequence[str], crop_size: int, seed: int = 0, cache_images: bool = True) -> None:
        if not paths:
            raise ValueError('RandomCropDataset needs at least one image')
        self.crop_size = crop_size
        self.seed = seed
        self.skipped: list[tuple[str, str]] = []
        self.read_failures: dict[str, str] = {}
        kept, cache = [], []
        for p in paths:
            try:
                if cache_images:
                    cache.append(self._read(p))
                else:
                    self._check_header(p)
            except ValueError as error:
                self.skipped.append((str(p), str(error)))
                continue
            kept.append(p)
        if not kept:
            raise ValueError(f'None of the {len(paths)} training images can be used:\n' + self.skip_summary())
        self.paths = kept
        self.cache = cache if cache_images else None

    def skip_summary(self, limit: int = 20) -> str:
        total = len(self.paths) + len(self.skipped) if hasattr(self, 'paths') else len(self.skipped)
        lines = [f'Skipped {len(self.skipped)} of {total} training images:']
        lines += [f'  {p}: {why}' for p, why in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(f'  ... and {len(self.skipped) - limit} more')
        return '\n'.join(lines)

    def _too_small(self, path: str, w: int, h: int) -> None:
        if min(w, h) < self.crop_size:
            raise ValueError(f'Image {path} is {w}x{h}, smaller than the {self.crop_size}px training crop; '
                             'remove it or lower crop_size.')

    def _check_header(self, path: str) -> None:
        try:
            with Image.open(path) as img:
                w, h = img.size
        except Exception as error:
            raise ValueError(f'cannot read image {path}: {type(error).__name__}: {error}') from None
        self._too_small(path, w, h)

    def _read(self, path: str) -> np.ndarray:
        from crossiqa_pyiqa.inputs import read_image_uint8

        arr = read_image_uint8(path)  # ImageReadError is a ValueError
        self._too_small(path, arr.shape[1], arr.shape[0])
        return arr

    def _read_or_next(self, k: int) -> np.ndarray:
        """Image ``k``, or the next readable one (deterministic) when it fails at read time."""
        for j in range(len(self.paths)):
            path = self.paths[(k + j) % len(self.paths)]
            if path in self.read_failures:
                continue
            try:
                return self._read(path)
            except ValueError as error:
                self.read_failures[path] = str(error)
                print(f'WARNING: skipping training image {path} ({error}); '
                      f'{len(self.read_failures)} image(s) skipped at read time in this process', flush=True)
        raise RuntimeError(f'No training image can be read any more ({len(self.read_failures)} failed).')

    def __len__(self) -> int:  # the sampler decides how many samples are drawn
        return 2 ** 62

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, index])
        k = int(rng.integers(len(self.paths)))
        img = self.cache[k] if self.cache is not None else self._read_or_next(k)
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
