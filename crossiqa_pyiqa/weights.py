"""One weight-file format for every model the plugin ships or fits.

A file is a safetensors archive: the model's ``state_dict`` plus string metadata
holding the architecture config (so a file rebuilds its own model) and free-form
provenance (training data, options, commit, date, measured results). Loading
errors always name the file and what is wrong with it, because a silently
mismatched weight file would give a silently wrong score.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

FORMAT_TAG = 'crossiqa-pyiqa/1'
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'


def user_weights_dir() -> Path:
    """Where fitted heads are written (``$CROSSIQA_HOME/weights`` or ``~/.cache/crossiqa_pyiqa/weights``)."""
    home = os.environ.get('CROSSIQA_HOME') or os.path.join(os.path.expanduser('~'), '.cache', 'crossiqa_pyiqa')
    return Path(home) / 'weights'


class WeightFileError(ValueError):
    """A weight file exists but cannot be used (corrupt, wrong format, wrong architecture)."""


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], arch: str,
                 config: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> Path:
    """Write ``state_dict`` with its architecture config and provenance, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to('cpu').contiguous().clone() for k, v in state_dict.items()}
    metadata = {
        'format': FORMAT_TAG,
        'arch': arch,
        'config': json.dumps(dict(config), sort_keys=True),
        'info': json.dumps(dict(info or {}), sort_keys=True, default=str),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; weight files are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_weights(path: str | os.PathLike, arch: str | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Return ``(state_dict, config, info)`` of a weight file, with errors that name the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config, info = read_metadata(path, arch)
    try:
        state_dict = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise WeightFileError(f'Weight file {path} is not a readable safetensors file ({error}).') from error
    return state_dict, config, info


def read_metadata(path: str | os.PathLike, arch: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, info)`` of a weight file from its header alone (no tensor is read), errors naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Weight file not found: {path}')
    try:
        with safe_open(str(path), framework='pt') as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise WeightFileError(f'Weight file {path} is not a readable safetensors file ({error}).') from error
    if metadata.get('format') != FORMAT_TAG:
        raise WeightFileError(
            f'Weight file {path} has format {metadata.get("format")!r}, expected {FORMAT_TAG!r} '
            '(was it written by crossiqa_pyiqa.weights.save_weights?).')
    if arch is not None and metadata.get('arch') != arch:
        raise WeightFileError(f'Weight file {path} holds a {metadata.get("arch")!r} model, not {arch!r}.')
    try:
        config = json.loads(metadata['config'])
        info = json.loads(metadata.get('info', '{}'))
    except (KeyError, json.JSONDecodeError) as error:
        raise WeightFileError(f'Weight file {path} has broken metadata ({error}).') from error
    return config, info


def read_named_or_path(pretrained_model_path: str | os.PathLike | None, packaged_path: str | os.PathLike,
                       arch: str, missing: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any], str]:
    """Read an explicit weight file, else the packaged one; ``missing`` says what to do when the latter is absent.

    Returns ``(state_dict, config, info, path)``.
    """
    path = str(pretrained_model_path or packaged_path)
    try:
        return (*read_weights(path, arch=arch), path)
    except FileNotFoundError:
        if pretrained_model_path:
            raise
        raise FileNotFoundError(f'{missing} ({path} is missing). Pass pretrained_model_path=<file.safetensors>, '
                                'or pretrained=False for a randomly initialised network.') from None


def load_state_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """``load_state_dict(strict=True)`` with a message that lists what does not match in which file."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f'{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f'missing keys {missing[:8]}' + (' ...' if len(missing) > 8 else ''))
        if unexpected:
            parts.append(f'unexpected keys {unexpected[:8]}' + (' ...' if len(unexpected) > 8 else ''))
        if shapes:
            parts.append('shape mismatches ' + '; '.join(shapes[:8]))
        raise WeightFileError(f'Weight file {path} does not match the {type(model).__name__} '
                              f'architecture: ' + ', '.join(parts) + '.')
    model.load_state_dict(state_dict, strict=True)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Content hash of a file, used to key feature caches to the exact weights."""
    import hashlib

    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


#: Entries a fitted head or fitted statistics live in (CrossIQA and GRepQ name them alike).
STATISTICS_KEYS = ('feat_mean', 'feat_std', 'head.weight', 'head.bias', 'pristine_mean', 'pristine_cov',
                   'pristine_cov_triu', 'text_features', 'zs_mean', 'zs_std', 'zs_coef',
                   'encoder.global_mean', 'encoder.global_std')
#: Prefixes of entries that are fitted heads too (``archs/diagnosis.py``: the diagnosis heads).
STATISTICS_PREFIXES = ('diagnosis.', 'diagnosis_map.', 'level_head.')
#: Dtypes too coarse for statistics: a float16 covariance or head turns scores into noise
#: (a float16 copy of crossiqa-zs scored 0.0, its best value, for noise and for black).
LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_statistics_precision(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Refuse a file whose head or statistics are stored in half precision (weights may be)."""
    low = sorted(k for k in state_dict if (k in STATISTICS_KEYS or k.startswith(STATISTICS_PREFIXES))
                 and state_dict[k].dtype in LOW_PRECISION)
    if low:
        raise WeightFileError(
            f'Weight file {path} stores {low} in {state_dict[low[0]].dtype}; the head and the statistics must be '
            'float32 (half precision rounds the covariance and the standardisation into wrong scores). '
            'Use the float32 file, or save_pretrained(..., dtype=torch.float16), which keeps them in float32.')


def head_is_fitted(state_dict: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> bool:
    """Whether a file holds a head fitted on MOS (not the untouched head of a pretext export)."""
    if 'has_fitted_head' in info:
        return bool(info['has_fitted_head'])
    mean, std = state_dict.get('feat_mean'), state_dict.get('feat_std')
    if mean is None or std is None:
        return False
    return bool((mean != 0).any()) or bool((std != 1).any())
