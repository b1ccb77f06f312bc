"""Weights on demand, as pyiqa and openai-clip do: downloaded once, verified, cached.

Why a module of its own: every weight the plugin fetches (OpenAI's CLIP RN50 for
GRepQ, a timm backbone for pretext initialisation) must obey the same rules, so a
user can predict what touches the network:

- a file that is already in place is used as it is, with no request at all;
- a download goes to a temporary file in the destination folder, is checked against
  its SHA-256 and only then renamed into place, so an interrupted or corrupted
  download never leaves a file that looks valid;
- offline (``HF_HUB_OFFLINE=1``, as for pyiqa's own Hugging Face downloads, or
  ``CROSSIQA_OFFLINE=1``, the plugin's own switch) nothing is fetched;
- every failure is one error naming the URL and the path where the file can be
  placed by hand.

Standard library only (``urllib``) plus tqdm for the progress bar; it imports nothing
from the package, so any module may build on it.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

#: Environment switches that forbid downloads (any of them set to 1/true/yes/on).
OFFLINE_ENV_VARS = ('CROSSIQA_OFFLINE', 'HF_HUB_OFFLINE')
#: Seconds to wait for a connection, and for each read of a stalled one.
DEFAULT_TIMEOUT = 20.0
_TRUE = {'1', 'true', 'yes', 'on'}  # huggingface_hub's reading of HF_HUB_OFFLINE
_SHA256 = re.compile(r'[0-9a-f]{64}')
_CHUNK = 1 << 20


class DownloadError(FileNotFoundError):
    """A weight file is not in place and could not be fetched (offline, unreachable, HTTP error).

    A ``FileNotFoundError`` because that is what the caller is left with: code that
    reports a missing weight file reports this one the same way.
    """


class ChecksumError(DownloadError):
    """A downloaded file's SHA-256 differs from the expected one; nothing was kept."""


def offline_mode() -> bool:
    """Whether downloads are forbidden: ``CROSSIQA_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1/true/yes/on."""
    return any(os.environ.get(name, '').strip().lower() in _TRUE for name in OFFLINE_ENV_VARS)


def _offline_switch() -> str:
    return next(f'{n}={os.environ[n]}' for n in OFFLINE_ENV_VARS
                if os.environ.get(n, '').strip().lower() in _TRUE)


def sha256_from_url(url: str) -> str | None:
    """openai-clip's convention: the second-to-last segment of the URL path is the file's SHA-256."""
    parts = [p for p in urllib.parse.urlparse(url).path.split('/') if p]
    if len(parts) >= 2 and _SHA256.fullmatch(parts[-2].lower()):
        return parts[-2].lower()
    return None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _by_hand(url: str, dest: Path, hint: str) -> str:
    return f'Download {url} by other means and place it at {dest}' + (f' ({hint})' if hint else '') + '.'


def download_verified(url: str, dest: str | os.PathLike, expected_sha256: str | None = None,
                      timeout: float = DEFAULT_TIMEOUT, progress: bool = True, hint: str = '') -> Path:
    """``dest``, downloading ``url`` there first when it is missing; returns the path.

    An existing ``dest`` is returned untouched (no request). Otherwise the file is
    streamed into a temporary file next to ``dest`` with a tqdm progress bar, its
    SHA-256 compared with ``expected_sha256`` (default: the URL's second-to-last
    path segment; a URL without one and no ``expected_sha256`` is refused, so every
    download is verified), and renamed into place. ``timeout`` bounds the connection
    and every read. ``hint`` is appended to errors (e.g. the option that names
    another file). Raises :class:`DownloadError` (offline, unreachable, HTTP error)
    or :class:`ChecksumError`; neither leaves a file behind.
    """
    dest = Path(dest).expanduser()
    if dest.is_file():
        return dest
    expected = (expected_sha256 or sha256_from_url(url) or '').lower()
    if not _SHA256.fullmatch(expected):
        raise ValueError(f'Cannot verify a download of {url}: give expected_sha256 or a URL of the form '
                         '.../<sha256>/<file name> (openai-clip\'s layout).')
    if offline_mode():
        raise DownloadError(f'{dest} is missing and downloads are off ({_offline_switch()}). '
                            + _by_hand(url, dest, hint))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + '.', suffix='.part')
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, 'wb') as out:
            try:
                _stream(url, out, digest, timeout, progress, dest.name)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                reason = getattr(error, 'reason', None) or error
                raise DownloadError(f'Could not download {url} to {dest} ({type(error).__name__}: {reason}). '
                                    + _by_hand(url, dest, hint)) from error
        actual = digest.hexdigest()
        if actual != expected:
            raise ChecksumError(f'SHA-256 mismatch for {url}: expected {expected}, got {actual}; '
                                f'the download was deleted and nothing was written to {dest}.')
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is meant to be shared
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def _stream(url: str, out: Any, digest: Any, timeout: float, progress: bool, label: str) -> None:
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={'User-Agent': 'crossiqa-pyiqa'})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = int(response.headers.get('Content-Length') or 0) or None
        with tqdm(total=total, desc=label, unit='B', unit_scale=True, unit_divisor=1024,
                  disable=not progress) as bar:
            received = 0
            for chunk in iter(lambda: response.read(_CHUNK), b''):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise http.client.IncompleteRead(b'', total - received)


def timm_pretrained_file(name: str) -> str | None:
    """The local file of timm model ``name``'s pretrained weights when downloads are off; ``None`` when on.

    timm fetches its weights itself (Hugging Face hub, or a torch-hub URL) and caches
    them; this leaves that alone online. Offline it finds the cached file without a
    request (timm's URL fallback would otherwise ignore ``HF_HUB_OFFLINE``, and
    huggingface_hub reads that variable only once, at import, so ``CROSSIQA_OFFLINE``
    alone would not stop it), or raises :class:`DownloadError` naming what to fetch
    and where to put it. Pass the result as ``pretrained_cfg_overlay={'file': ...}``
    or use :func:`create_timm_model`.
    """
    if not offline_mode():
        return None
    import timm
    import torch

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f'timm has no pretrained weights for {name!r}')
    cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    if cfg.get('file'):
        return str(cfg['file'])
    places = []
    if cfg.get('hf_hub_id'):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.constants import HF_HUB_CACHE

        repo = cfg['hf_hub_id']
        names = [cfg['hf_hub_filename']] if cfg.get('hf_hub_filename') else ['model.safetensors',
                                                                          'pytorch_model.bin']
        for filename in names:
            try:
                return hf_hub_download(repo, filename, local_files_only=True)
            except Exception:  # not in the cache (LocalEntryNotFoundError and kin)
                places.append(f'https://huggingface.co/{repo}/resolve/main/{filename} into the Hugging Face '
                              f'cache {HF_HUB_CACHE} (`huggingface-cli download {repo} {filename}`)')
    if cfg.get('url'):
        cached = Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(urllib.parse.urlparse(cfg['url']).path)
        if cached.is_file():
            return str(cached)
        places.append(f'{cfg["url"]} to {cached}')
    raise DownloadError(f'The pretrained weights of timm model {name!r} are not cached and downloads are off '
                        f'({_offline_switch()}). Run once with network, or fetch one of them by other means: '
                        + ('; or '.join(places) or f'see timm.models.get_pretrained_cfg({name!r})') + '.')


def create_timm_model(name: str, pretrained: bool = True, **kwargs: Any) -> Any:
    """``timm.create_model`` that respects :func:`offline_mode` for the pretrained weights."""
    import timm

    path = timm_pretrained_file(name) if pretrained else None
    if path is not None:
        overlay = {**(kwargs.pop('pretrained_cfg_overlay', None) or {}), 'file': path}
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    return timm.create_model(name, pretrained=pretrained, **kwargs)


__all__ = ['DEFAULT_TIMEOUT', 'OFFLINE_ENV_VARS', 'ChecksumError', 'DownloadError', 'create_timm_model',
           'download_verified', 'file_sha256', 'offline_mode', 'sha256_from_url', 'timm_pretrained_file']
