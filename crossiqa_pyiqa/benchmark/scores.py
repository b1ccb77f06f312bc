"""Per-image scores of a metric, appended to a JSON-lines cache as they are computed.

A killed benchmark resumes where it stopped: each line is one image's score, keyed by
metric spec + dataset identity, so a changed metric option or dataset starts afresh.
Several processes may share one cache (e.g. one scoring first-to-last and one
last-to-first to spread a slow metric over two cores): each re-reads the lines the
others appended before scoring an item, and skips what is already there.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from crossiqa_pyiqa.regression.features import progress


def cache_file(cache_dir: str | os.PathLike, metric_identity: dict[str, Any], data_identity: str,
               prefix: str) -> Path:
    blob = json.dumps({'metric': metric_identity, 'data': data_identity}, sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:20]
    return Path(cache_dir) / 'scores' / f'{prefix}-{metric_identity["name"]}-{key}.jsonl'


def _load(path: Path, done: dict[str, tuple[float, float]] | None = None,
          offset: int = 0) -> tuple[dict[str, tuple[float, float]], int]:
    """Scores in the cache from byte ``offset`` on (added to ``done``), and the offset reached."""
    done = {} if done is None else done
    if path.is_file():
        with open(path, 'rb') as f:
            f.seek(offset)
            for raw in f:
                if not raw.endswith(b'\n'):
                    break  # another process is writing this line: read it next time
                offset += len(raw)
                try:
                    item = json.loads(raw)
                    done[item['key']] = (float(item['score']), float(item.get('seconds', float('nan'))))
                except (ValueError, KeyError):
                    continue  # a line cut by a kill: recomputed
    return done, offset


def _ends_with_newline(path: Path) -> bool:
    with open(path, 'rb') as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b'\n'


@torch.inference_mode()
def score_items(model, keys: Sequence[str], read: Callable[[int], Any], cache: Path | None,
                desc: str = 'scores', reverse: bool = False) -> tuple[np.ndarray, float]:
    """``model(read(i))`` for every item, reusing and extending the cache. ``read`` returns a tensor or (img, ref).

    Returns the scores and the mean seconds per item (read + score), measured when each
    was computed, so a resumed run still reports the metric's real cost. ``reverse``
    scores the missing items last-first (for a second process sharing the cache).
    """
    done, offset = _load(cache) if cache is not None else ({}, 0)
    scores = np.full(len(keys), np.nan)
    seconds = np.full(len(keys), np.nan)
    todo = []
    for i, key in enumerate(keys):
        if key in done:
            scores[i], seconds[i] = done[key]
        else:
            todo.append(i)
    if not todo:
        return scores, float(np.nanmean(seconds)) if np.isfinite(seconds).any() else float('nan')
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
    out = open(cache, 'a') if cache is not None else None
    if out is not None and cache.stat().st_size and not _ends_with_newline(cache):
        out.write('\n')  # a line cut by a kill: end it, so the next score starts on its own line
    try:
        bar = progress(total=len(keys), initial=len(keys) - len(todo), desc=desc, unit='img')
        for i in (reversed(todo) if reverse else todo):
            if cache is not None:  # another process sharing the cache may have scored it meanwhile
                done, offset = _load(cache, done, offset)
                if keys[i] in done:
                    scores[i], seconds[i] = done[keys[i]]
                    bar.update(1)
                    continue
            t0 = time.perf_counter()
            try:
                item = read(i)
                if isinstance(item, tuple):
                    value = model(item[0][None] if item[0].dim() == 3 else item[0],
                                  item[1][None] if item[1].dim() == 3 else item[1])
                else:
                    value = model(item[None] if item.dim() == 3 else item)
            except Exception as error:
                raise RuntimeError(f'{desc}: scoring {keys[i]} failed: {error}') from error
            value = float(torch.as_tensor(value).reshape(-1)[0])
            if not math.isfinite(value):
                raise RuntimeError(f'{desc}: non-finite score {value} for {keys[i]}')
            scores[i] = value
            seconds[i] = time.perf_counter() - t0
            if out is not None:
                out.write(json.dumps({'key': keys[i], 'score': value, 'seconds': round(seconds[i], 4)}) + '\n')
                out.flush()
            bar.update(1)
        bar.close()
    finally:
        if out is not None:
            out.close()
    return scores, float(np.nanmean(seconds))
