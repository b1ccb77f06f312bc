"""Pretext training: the loss falls, resume is exact, DDP ranks agree, SIGTERM leaves a checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / 'scripts' / 'pretrain_crossiqa.py')
DEBUG = str(ROOT / 'options' / 'pretrain' / 'crossiqa_debug.yml')
sys.path.insert(0, str(ROOT / 'scripts'))
import pretrain_crossiqa  # noqa: E402


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory) -> str:
    """Twelve real photographs (crops of scikit-image's samples) in nested folders and formats."""
    folder = tmp_path_factory.mktemp('pristine')
    (folder / 'sub').mkdir()
    k = 0
    for name in ('astronaut', 'chelsea', 'coffee', 'rocket'):
        arr = getattr(skimage.data, name)()
        for j, (y, x) in enumerate([(0, 0), (100, 120), (200, 60)]):
            crop = arr[y:y + 160, x:x + 200]
            ext = ('png', 'jpg', 'bmp')[j]
            Image.fromarray(crop).save(folder / ('sub' if k % 2 else '') / f'{name}_{j}.{ext}')
            k += 1
    return str(folder)


def run(image_dir, out, *extra):
    summary = Path(out) / 'summary.json'
    argv = ['-opt', DEBUG, '--data', image_dir, '--out', str(out), '--summary', str(summary),
            '--set', 'logger.use_tb_logger=false', *extra]
    assert pretrain_crossiqa.main(argv) == 0
    return json.loads(summary.read_text())


def test_debug_config_loss_falls(image_dir, tmp_path):
    s = run(image_dir, tmp_path / 'a', '--set', 'logger.visual_freq=10')
    assert s['steps'] == 30 and not s['interrupted']
    losses = np.array(s['losses'])
    assert losses[-5:].mean() < 0.8 * losses[:5].mean(), losses
    assert (tmp_path / 'a' / 'visualization' / 'step_00000030.png').is_file()
    # the export is a CrossIQA weight file that pyiqa can load
    import pyiqa
    import crossiqa_pyiqa  # noqa: F401
    metric = pyiqa.create_metric('crossiqa', device='cpu', pretrained_model_path=s['export'])
    assert metric.net.info['steps'] == 30 and metric.net.info['stage'] == 'pretext'
    assert torch.isfinite(metric.net.forward_features(torch.rand(1, 3, 100, 90))).all()
    with pytest.raises(RuntimeError, match='no fitted head.*fit_regressor'):  # its head was never fitted
        metric(torch.rand(1, 3, 100, 90))


def test_resume_matches_uninterrupted_run(image_dir, tmp_path):
    a = run(image_dir, tmp_path / 'a', '--max-steps', '20')
    b1 = run(image_dir, tmp_path / 'b', '--max-steps', '20', '--stop-after', '10')
    assert b1['interrupted'] and b1['steps'] == 10
    b2 = run(image_dir, tmp_path / 'b', '--max-steps', '20', '--resume', 'auto')
    assert b2['steps'] == 20 and b2['steps_this_run'] == 10
    wa = torch.load(a['checkpoint'], weights_only=False)['model']
    wb = torch.load(b2['checkpoint'], weights_only=False)['model']
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_ddp_two_processes_gloo(image_dir, tmp_path):
    summary = tmp_path / 'summary.json'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', SCRIPT,
           '-opt', DEBUG, '--data', image_dir, '--out', str(tmp_path / 'ddp'), '--max-steps', '6',
           '--summary', str(summary), '--set', 'logger.use_tb_logger=false', 'num_threads=1']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    s = json.loads(summary.read_text())
    assert s['world_size'] == 2 and s['steps'] == 6
    assert s['ranks_agree'] and len(s['param_checksums']) == 2


def test_sigterm_leaves_loadable_checkpoint(image_dir, tmp_path):
    out_dir = tmp_path / 'sig'
    cmd = [sys.executable, SCRIPT, '-opt', DEBUG, '--data', image_dir, '--out', str(out_dir),
           '--max-steps', '100000', '--set', 'logger.use_tb_logger=false', 'logger.save_checkpoint_freq=100000']
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until training is under way
        time.sleep(1)
        if proc.poll() is not None:
            break
        if (out_dir / 'checkpoints').is_dir() and time.time() > deadline - 230:
            break
    time.sleep(5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert 'Interrupted by signal' in stdout
    ckpts = sorted((out_dir / 'checkpoints').glob('ckpt_*.pth'))
    assert len(ckpts) == 1
    state = torch.load(ckpts[0], weights_only=False)
    assert 0 < state['step'] < 100000 and 'optimizer' in state and 'rng' in state


def test_class_token_invariance_term_by_hand():
    """InfoNCE between class tokens of the same degradation on different content (an addition)."""
    from crossiqa_pyiqa.train.tasks import class_token_invariance

    q = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.6, 0.8], [0.8, 0.6]], dtype=torch.float64)
    # images 0/2 and 1/3 share a degradation; image 3's spec also equals image 1's (its partner)
    specs = [(('gaussian_blur', 2.0),), (('jpeg', 3.0),), (('gaussian_blur', 2.0),), (('jpeg', 3.0),)]
    tau = 0.5
    z = q / q.norm(dim=1, keepdim=True)
    sim = (z @ z.T / tau).numpy()
    expected = []
    for i, (pos, negs) in enumerate([(2, [1, 3]), (3, [0, 2]), (0, [1, 3]), (1, [0, 2])]):
        expected.append(-sim[i, pos] + np.log(np.exp(sim[i, [pos] + negs]).sum()))
    got = class_token_invariance(q, specs, tau)
    assert got.item() == pytest.approx(float(np.mean(expected)), rel=1e-6)
    # six images, pairs (0,3) (1,4) (2,5): tokens with their row's spec (other than the positive)
    # are not negatives, so 0, 2, 3, 5 (all blur) only compete with the jpeg images 1 and 4
    specs6 = [specs[0], specs[1], specs[0], specs[0], specs[1], specs[0]]
    q6 = torch.cat([q, torch.tensor([[5.0, -1.0], [-0.3, 1.0]], dtype=torch.float64)])[[0, 1, 4, 2, 3, 5]]
    z6 = q6 / q6.norm(dim=1, keepdim=True)
    s6 = (z6 @ z6.T / tau).numpy()
    rows = [(3, [1, 4]), (4, [0, 2, 3, 5]), (5, [1, 4]), (0, [1, 4]), (1, [0, 2, 3, 5]), (2, [1, 4])]
    by_hand = np.mean([-s6[i, p] + np.log(np.exp(s6[i, [p] + n]).sum()) for i, (p, n) in enumerate(rows)])
    assert class_token_invariance(q6, specs6, tau).item() == pytest.approx(float(by_hand), rel=1e-6)
    with pytest.raises(ValueError, match='at least 2'):
        class_token_invariance(q[:1], specs[:1], tau)


def test_invariance_batches_share_degradations_across_halves():
    from crossiqa_pyiqa.degradations import DegradationSampler
    from crossiqa_pyiqa.train.tasks import _degradation_pairs

    sampler = DegradationSampler(identity_prob=0.1, max_compose=2, continuous=True)
    a, b = _degradation_pairs(sampler, torch.zeros(8, 3, 8, 8), torch.Generator().manual_seed(0), shared_halves=True)
    assert a[:4] == a[4:] and len(set(map(tuple, a[:4]))) == 4
    assert all(x != y for x, y in zip(a, b))


def test_cross_partner_takes_the_quality_token_from_the_partner_image():
    """quality_source: D(q_a[j], P_b[i]) ≈ a[i] (addition: same degradations, other content)."""
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA
    from crossiqa_pyiqa.degradations import DegradationSampler
    from crossiqa_pyiqa.train.tasks import _degradation_pairs

    torch.manual_seed(0)
    net = CrossIQA(pretrained=False, size='tiny', img_size=32, patch_size=16, depth=2, decoder_depth=1).eval()
    a, b = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    swap = torch.tensor([2, 3, 0, 1])
    with torch.no_grad():
        plain = net.pretext(a, b, with_self=False)
        partner = net.pretext(a, b, with_self=False, quality_source=swap)
        # content stays with image i, only the class tokens move
        enc = net.encoder(torch.cat([a, b]))
        by_hand = net.decoder(torch.cat([enc['cls'][:4][swap], enc['cls'][4:][swap]]),
                              torch.cat([enc['patches'][4:], enc['patches'][:4]]), None)
    assert torch.allclose(partner['cross_a'], by_hand[:4], atol=1e-6)
    assert torch.allclose(partner['cross_b'], by_hand[4:], atol=1e-6)
    assert not torch.allclose(partner['cross_a'], plain['cross_a'], atol=1e-4)
    # when the partner is the same picture, the partner term is the paper's cross term
    twins_a, twins_b = torch.cat([a[:2], a[:2]]), torch.cat([b[:2], b[:2]])
    with torch.no_grad():
        same = net.pretext(twins_a, twins_b, with_self=False, quality_source=swap)
        ref = net.pretext(twins_a, twins_b, with_self=False)
    assert torch.allclose(same['cross_a'], ref['cross_a'], atol=1e-5)
    with pytest.raises(ValueError, match='one index per image'):
        net.pretext(a, b, quality_source=swap[:3])
    # the sampler gives partners both degradations
    sampler = DegradationSampler(identity_prob=0.1, max_compose=2, continuous=True)
    sa, sb = _degradation_pairs(sampler, torch.zeros(6, 3, 8, 8), torch.Generator().manual_seed(1),
                                shared_halves=True, share_b=True)
    assert sa[:3] == sa[3:] and sb[:3] == sb[3:] and all(x != y for x, y in zip(sa, sb))
