"""Weights on demand: GRepQ's CLIP file served by a local HTTP server, verified, cached, offline switch, timm."""
import http.server
import os
import socket
import threading
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest
import skimage.data
import torch

import crossiqa_pyiqa  # noqa: F401  (registers grepq-zs)
import pyiqa
from crossiqa_pyiqa.archs.grepq_arch import GRepQ
from crossiqa_pyiqa.download import (ChecksumError, DownloadError, create_timm_model, download_verified,
                                     file_sha256, offline_mode, sha256_from_url)


# ------------------------------------------------------------------------------ fixtures
class Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` (URL path → bytes) and records every request path."""

    def __init__(self) -> None:
        super().__init__(('127.0.0.1', 0), Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.url = f'http://127.0.0.1:{self.server_address[1]}'


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.path == '/truncated/' + '0' * 64 + '/RN50.pt':  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header('Content-Length', '1000')
            self.end_headers()
            self.wfile.write(b'x' * 10)
            return
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed, and 127.0.0.1 reached directly even where a proxy is configured."""
    for name in ('HF_HUB_OFFLINE', 'CROSSIQA_OFFLINE'):
        monkeypatch.delenv(name, raising=False)
    for name in ('no_proxy', 'NO_PROXY'):
        monkeypatch.setenv(name, '127.0.0.1,localhost')
    assert not offline_mode()


@pytest.fixture(scope='module')
def clip_bytes(tmp_path_factory):
    """A CLIP with a random RN50 image tower, saved as tests/test_grepq.py saves one: (bytes, sha256, file)."""
    from crossiqa_pyiqa.grepq.clip_tower import clip

    torch.manual_seed(0)
    model = clip.model.CLIP(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                            vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
                            transformer_heads=1, transformer_layers=1).eval()
    path = tmp_path_factory.mktemp('clip') / 'RN50-random.pt'
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    return path.read_bytes(), file_sha256(path), path


@pytest.fixture(scope='module')
def image():
    return torch.from_numpy(skimage.data.astronaut()[:224, :224].copy()).permute(2, 0, 1)[None].float() / 255


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------ GRepQ's CLIP
def test_grepq_zs_downloads_verifies_and_scores_then_uses_the_cache(server, online, clip_bytes, image, tmp_path):
    body, sha, original = clip_bytes
    server.files[f'/{sha}/RN50.pt'] = body
    url, dest = f'{server.url}/{sha}/RN50.pt', tmp_path / 'cache' / 'RN50.pt'

    metric = pyiqa.create_metric('grepq-zs', device='cpu', clip_url=url, clip_model_path=str(dest))
    assert server.requests == [f'/{sha}/RN50.pt']
    assert dest.is_file() and file_sha256(dest) == sha and leftovers(dest.parent) == ['RN50.pt']
    with torch.no_grad():
        score = metric(image).item()
        expected = GRepQ(use_clip=True, clip_model_path=str(original))(image).item()  # the served file, read locally
    assert 0 < score < 1.5 and score == pytest.approx(expected, abs=1e-5)

    again = pyiqa.create_metric('grepq-zs', device='cpu', clip_url=url, clip_model_path=str(dest))
    assert len(server.requests) == 1  # cached: no second request
    with torch.no_grad():
        assert again(image).item() == pytest.approx(score, abs=1e-6)


def test_wrong_hash_in_the_url_leaves_no_file_and_names_both_hashes(server, online, clip_bytes, tmp_path):
    body, sha, _ = clip_bytes
    wrong = 'f' * 64
    server.files[f'/{wrong}/RN50.pt'] = body
    url, dest = f'{server.url}/{wrong}/RN50.pt', tmp_path / 'cache' / 'RN50.pt'
    with pytest.raises(ChecksumError) as info:
        pyiqa.create_metric('grepq-zs', device='cpu', clip_url=url, clip_model_path=str(dest))
    message = str(info.value)
    assert url in message and f'expected {wrong}' in message and f'got {sha}' in message
    assert server.requests == [f'/{wrong}/RN50.pt'] and leftovers(dest.parent) == []


def test_closed_port_fails_fast_with_a_clear_error(online, tmp_path):
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    url, dest = f'http://127.0.0.1:{port}/{"a" * 64}/RN50.pt', tmp_path / 'cache' / 'RN50.pt'
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        pyiqa.create_metric('grepq-zs', device='cpu', clip_url=url, clip_model_path=str(dest))
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert url in message and f'place it at {dest}' in message and 'clip_model_path' in message
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize('switch', ['HF_HUB_OFFLINE', 'CROSSIQA_OFFLINE'])
def test_offline_switch_makes_no_connection(server, online, clip_bytes, tmp_path, monkeypatch, switch):
    _, sha, _ = clip_bytes
    monkeypatch.setenv(switch, '1')
    url, dest = f'{server.url}/{sha}/RN50.pt', tmp_path / 'cache' / 'RN50.pt'
    with pytest.raises(DownloadError) as info:
        pyiqa.create_metric('grepq-zs', device='cpu', clip_url=url, clip_model_path=str(dest))
    message = str(info.value)
    assert f'{switch}=1' in message and url in message and f'place it at {dest}' in message
    assert server.requests == [] and not dest.exists()
    assert isinstance(info.value, FileNotFoundError)  # scripts report it like any missing weight file


# ------------------------------------------------------------------------------ the mechanism
def test_existing_file_is_used_without_a_request_even_offline(server, tmp_path, monkeypatch):
    monkeypatch.setenv('CROSSIQA_OFFLINE', '1')
    dest = tmp_path / 'w.bin'
    dest.write_bytes(b'mine')
    assert download_verified(f'{server.url}/{"0" * 64}/w.bin', dest) == dest
    assert dest.read_bytes() == b'mine' and server.requests == []


def test_interrupted_download_leaves_no_file(server, online, tmp_path):
    url, dest = f'{server.url}/truncated/{"0" * 64}/RN50.pt', tmp_path / 'RN50.pt'
    with pytest.raises(DownloadError, match='IncompleteRead'):
        download_verified(url, dest, progress=False)
    assert leftovers(tmp_path) == []


def test_silent_server_times_out(online, tmp_path):
    """A host that accepts the connection and never answers: bounded by ``timeout``."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen(1)
        url = f'http://127.0.0.1:{sock.getsockname()[1]}/{"0" * 64}/w.bin'
        start = time.monotonic()
        with pytest.raises(DownloadError, match='timed out'):
            download_verified(url, tmp_path / 'w.bin', timeout=0.5, progress=False)
        assert time.monotonic() - start < 5
    assert leftovers(tmp_path) == []


def test_explicit_hash_and_unverifiable_urls(server, online, tmp_path):
    server.files['/plain/w.bin'] = b'weights'
    assert sha256_from_url(f'http://x/{"AB" * 32}/RN50.pt') == 'ab' * 32
    assert sha256_from_url('http://x/plain/w.bin') is None
    with pytest.raises(ValueError, match='expected_sha256'):
        download_verified(f'{server.url}/plain/w.bin', tmp_path / 'w.bin')
    import hashlib

    sha = hashlib.sha256(b'weights').hexdigest()
    out = download_verified(f'{server.url}/plain/w.bin', tmp_path / 'w.bin', expected_sha256=sha, progress=False)
    assert out.read_bytes() == b'weights' and oct(out.stat().st_mode & 0o777) == oct(0o644)


# ------------------------------------------------------------------------------ timm backbones
def test_timm_weights_offline_come_from_the_cache_or_a_clear_error(tmp_path, monkeypatch):
    """Offline, a timm name resolves to the Hugging Face cache with no request, or fails naming the hub file."""
    import huggingface_hub.constants
    import timm

    monkeypatch.setenv('CROSSIQA_OFFLINE', '1')  # the plugin's switch alone: huggingface_hub read its env at import
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    hub_file = r'timm/test_vit\.r160_in1k/resolve/main/model\.safetensors'
    with pytest.raises(DownloadError, match=r"'test_vit'.*CROSSIQA_OFFLINE=1.*" + hub_file):
        create_timm_model('test_vit')

    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model('test_vit', pretrained=False)
    repo = tmp_path / 'hub' / 'models--timm--test_vit.r160_in1k'
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text('0' * 40)
    (repo / 'snapshots' / ('0' * 40)).mkdir(parents=True)
    save_file(source.state_dict(), str(repo / 'snapshots' / ('0' * 40) / 'model.safetensors'))
    model = create_timm_model('test_vit')
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))


def test_only_openai_rn50_is_loaded_as_torchscript(tmp_path):
    """A TorchScript archive runs code when loaded: any file but OpenAI's own RN50 must be a plain state dict."""
    from crossiqa_pyiqa.grepq.clip_tower import load_clip_checkpoint

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w

    archive = tmp_path / 'RN50.pt'
    torch.jit.save(torch.jit.script(Tiny()), str(archive))
    with pytest.raises(ValueError, match='other TorchScript archives are not loaded'):
        load_clip_checkpoint(archive)
    plain = tmp_path / 'plain.pt'
    torch.save({'w': torch.ones(2)}, plain)
    assert torch.equal(load_clip_checkpoint(plain)['w'], torch.ones(2))
