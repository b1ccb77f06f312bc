"""Compression family (KADID types 9-10): JPEG 2000 and JPEG via Pillow.

These are the only codec-based (not torch-native) types: the batch is rounded to 8 bit
(as KADID's ``imwrite``), moved to the CPU and each image is encoded and decoded by Pillow
(libjpeg / OpenJPEG) in a shared thread pool; Pillow releases the GIL while coding, so
images of one batch run in parallel. Cost per 224x224 crop on the 2-core reference CPU
(docs/DEGRADATIONS.md): JPEG ~1.2 ms, JPEG 2000 ~10 ms of CPU time (OpenJPEG's encoder
dominates), i.e. JPEG 2000 is the most expensive type; on a GPU add a device->host->device
round trip per batch.
"""
from __future__ import annotations

import io
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image, features

from crossiqa_pyiqa.degradations._core import Generators, register

#: KADID JPEG 2000 compression ratios (``imwrite(..., 'CompressionRatio', r)``).
JP2K_RATIO = (16.0, 32.0, 45.0, 120.0, 400.0)
#: KADID JPEG quality (IJG scale, as Pillow's ``quality``).
JPEG_QUALITY = (43, 36, 24, 7, 4)

_POOL: Optional[ThreadPoolExecutor] = None
_POOL_LOCK = threading.Lock()
_THREADS = int(os.environ.get('CROSSIQA_CODEC_THREADS', '0')) or min(8, os.cpu_count() or 1)


def set_codec_threads(n: int) -> None:
    """Number of threads used for JPEG / JPEG 2000 coding (default: CPU count, at most 8)."""
    global _POOL, _THREADS
    if n < 1:
        raise ValueError(f'codec threads must be >= 1, got {n}')
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=True)
            _POOL = None
        _THREADS = int(n)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix='degradation-codec')
        return _POOL


def _roundtrip(x: torch.Tensor, params: list[float], code: Callable[[np.ndarray, float], np.ndarray]
               ) -> torch.Tensor:
    u8 = (x.detach() * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if len(params) == 1:
        outs = [code(u8[0], params[0])]
    else:
        outs = list(_pool().map(code, list(u8), params))
    y = torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2)
    return y.to(device=x.device, dtype=x.dtype) / 255


def _jpeg(img: np.ndarray, quality: float) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='JPEG', quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert('RGB'))


def _jpeg2000(img: np.ndarray, ratio: float) -> np.ndarray:
    h, w = img.shape[:2]
    # OpenJPEG needs every resolution level to keep >= 1 px; KADID-sized images use 6.
    levels = max(1, min(6, int(math.log2(min(h, w))) - 1))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='JPEG2000', quality_mode='rates', quality_layers=[float(ratio)],
                              irreversible=True, mct=1, num_resolutions=levels, no_jp2=True)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert('RGB'))


def jpeg2000_available() -> bool:
    """Whether this Pillow build has OpenJPEG (needed by ``jpeg2000``)."""
    return bool(features.check('jpg_2000'))


@register('jpeg2000', JP2K_RATIO, torch_native=False, param_name='ratio')
def jpeg2000(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """JPEG 2000 (OpenJPEG, 9/7 wavelet + ICT, as MATLAB's lossy mode) at ratio r: 16, 32, 45, 120, 400."""
    if not jpeg2000_available():
        raise RuntimeError("jpeg2000 needs Pillow built with OpenJPEG (PIL.features.check('jpg_2000') is False)")
    return _roundtrip(x, p.tolist(), _jpeg2000)


@register('jpeg', JPEG_QUALITY, integer=True, torch_native=False, param_name='quality')
def jpeg(x: torch.Tensor, p: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Baseline JPEG (libjpeg via Pillow, 4:2:0) at quality q: 43, 36, 24, 7, 4."""
    return _roundtrip(x, p.tolist(), _jpeg)
