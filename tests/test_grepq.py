"""GRepQ: losses, fragments, zero-shot distance, CLIP path (random RN50), training tasks, pyiqa metrics."""
import math
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np
import pytest
import skimage.data
import skimage.filters
import torch
from PIL import Image

import crossiqa_pyiqa  # noqa: F401
import pyiqa
from crossiqa_pyiqa.archs.grepq_arch import GREPQ_METRICS, GRepQ
from crossiqa_pyiqa.grepq.fragments import random_flip, sample_fragments
from crossiqa_pyiqa.grepq.loss import fsim_weights, group_contrastive_loss, qacl_loss
from crossiqa_pyiqa.grepq.pristine import (colourfulness, fit_pristine_statistics, gaussian_statistics,
                                           niqe_distance, select_pristine_patches, sharpness)
from crossiqa_pyiqa.registration import register_metric
from crossiqa_pyiqa.weights import PACKAGE_WEIGHTS_DIR

SHIPPED = PACKAGE_WEIGHTS_DIR / 'grepq_ll.safetensors'


@pytest.fixture(scope='module', autouse=True)
def grepq_metrics():
    """Register the GRepQ metrics as registration.register() will once the lead adds them."""
    for name, cfg in GREPQ_METRICS.items():
        register_metric(name, cfg['metric_opts'], cfg['lower_better'], cfg['score_range'])


def photo(name: str) -> torch.Tensor:
    arr = getattr(skimage.data, name)()
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    """Real photographs written as files: the 'pristine' folder of the tests."""
    folder = tmp_path_factory.mktemp('pristine')
    for name in ('astronaut', 'chelsea', 'coffee', 'rocket'):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f'{name}.png')
    return folder


@pytest.fixture(scope='module')
def ll_file(tmp_path_factory, image_dir):
    """A random low-level encoder with pristine statistics of the test photos, as a weight file."""
    torch.manual_seed(0)
    net = GRepQ(pretrained=False, head='linear')
    paths = sorted(str(p) for p in image_dir.iterdir())
    mean, cov, meta = fit_pristine_statistics(net.ll, paths)
    with torch.no_grad():
        net.pristine_mean.copy_(mean)
        net.pristine_cov.copy_(cov)
    path = tmp_path_factory.mktemp('w') / 'grepq_ll_test.safetensors'
    return net.save_pretrained(str(path), {**meta, 'has_pristine_stats': True})


# ----------------------------------------------------------------------------- losses
def test_qacl_closed_form_two_versions():
    # Orthonormal features, identical views: c = I / τ = diag(2). s_12 = 0.5 → α_12 = 2 − 2/1.25 = 0.4.
    # Each anchor: −log((e² + 0.4) / (e² + 1)); both views give the same → L = 2 log((e² + 1) / (e² + 0.4)).
    f = torch.eye(2, dtype=torch.float64)[None]
    sim = torch.tensor([[[1.0, 0.5], [0.5, 1.0]]], dtype=torch.float64)
    expected = 2 * math.log((math.e ** 2 + 1) / (math.e ** 2 + 0.4))
    assert fsim_weights(torch.tensor(0.5)).item() == pytest.approx(0.4)
    assert qacl_loss(f, f, sim, tau=0.5).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.148417, abs=1e-6)


def test_qacl_matches_hand_computation_both_directions():
    f1 = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]], dtype=torch.float64)
    f2 = torch.tensor([[[3.0, 1.0], [1.0, -1.0], [0.0, 1.0]]], dtype=torch.float64)
    s = [[1.0, 0.6, 0.8], [0.6, 1.0, 0.3], [0.8, 0.3, 1.0]]
    tau = 0.5

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    a, b = f1[0].tolist(), f2[0].tolist()
    c = [[cos(a[k], b[l]) / tau for l in range(3)] for k in range(3)]
    alpha = [[2 - 2 / (1 + s[k][l] ** 2) for l in range(3)] for k in range(3)]
    view_1 = sum(-math.log(sum(alpha[k][l] * math.exp(c[k][l]) for l in range(3))
                           / sum(math.exp(c[k][l]) for l in range(3))) for k in range(3)) / 3
    view_2 = sum(-math.log(sum(alpha[k][l] * math.exp(c[k][l]) for k in range(3))
                           / sum(math.exp(c[k][l]) for k in range(3))) for l in range(3)) / 3
    assert abs(view_1 - view_2) > 1e-3  # the two directions really differ here
    sim = torch.tensor([s], dtype=torch.float64)
    got = qacl_loss(f1, f2, sim, tau)
    assert got.item() == pytest.approx(view_1 + view_2, rel=1e-12)
    # swapping the views swaps the two directions; a batch is the mean over its images
    assert qacl_loss(f2, f1, sim, tau).item() == pytest.approx(view_1 + view_2, rel=1e-12)
    two = qacl_loss(torch.cat([f1, f1]), torch.cat([f2, f2]), torch.cat([sim, sim]), tau)
    assert two.item() == pytest.approx(view_1 + view_2, rel=1e-12)


def test_group_contrastive_loss_hand_computed():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    t = 0.5
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    sim = (z @ z.T).tolist()
    total = 0.0
    for i in range(4):
        own = [j for j in range(4) if j // 2 == i // 2 and j != i]
        other = [j for j in range(4) if j // 2 != i // 2]
        pos = sum(sim[i][j] for j in own) / len(own)
        total += -math.log(math.exp(pos / t) / (math.exp(pos / t) + sum(math.exp(sim[i][j] / t) for j in other)))
    assert group_contrastive_loss(a, b, t).item() == pytest.approx(total / 4, rel=1e-12)


# -------------------------------------------------------------------------- fragments
def test_fragments_aligned_across_versions_and_cells():
    h, w = 320, 290
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    coords = torch.stack([ys, xs, torch.zeros_like(ys)]).float()  # channel 0/1 = source row/column
    versions = torch.stack([coords + 1000 * k for k in range(9)])[None].repeat(2, 1, 1, 1, 1)  # (2, 9, 3, H, W)
    g = torch.Generator().manual_seed(0)
    view = sample_fragments(versions, g)
    assert view.shape == (2, 9, 3, 224, 224)
    for k in range(9):  # same positions in every version of an image
        assert torch.equal(view[:, k] - 1000 * k, view[:, 0])
    rows, cols = view[:, 0, 0], view[:, 0, 1]
    cell_h, cell_w = h // 7, w // 7
    for i in range(7):
        for j in range(7):
            r = rows[:, 32 * i:32 * i + 32, 32 * j:32 * j + 32]
            c = cols[:, 32 * i:32 * i + 32, 32 * j:32 * j + 32]
            # a contiguous 32x32 crop lying inside grid cell (i, j)
            assert torch.equal(r - r[:, :1, :1], torch.arange(32.)[None, :, None].expand_as(r))
            assert torch.equal(c - c[:, :1, :1], torch.arange(32.)[None, None, :].expand_as(c))
            assert (r[:, 0, 0] >= cell_h * i).all() and (r[:, -1, 0] < cell_h * (i + 1)).all()
            assert (c[:, 0, 0] >= cell_w * j).all() and (c[:, 0, -1] < cell_w * (j + 1)).all()
    assert not torch.equal(view[0, 0], view[1, 0])  # offsets are drawn per image
    second = sample_fragments(versions, g)
    assert not torch.equal(second, view)  # the second view is an independent draw
    flipped = random_flip(second, torch.Generator().manual_seed(3))
    for k in range(9):  # flips are shared by the versions of an image
        assert torch.equal(flipped[:, k] - 1000 * k, flipped[:, 0])


# -------------------------------------------------------------------------- zero-shot
def test_zeroshot_distance_zero_for_same_statistics_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 200, 16, generator=g, dtype=torch.float64) @ torch.randn(16, 16, generator=g,
                                                                                      dtype=torch.float64)
    mean, cov = gaussian_statistics(feats[0])
    assert niqe_distance(feats, mean, cov).item() == 0.0
    distances = [niqe_distance(feats + shift, mean, cov).item() for shift in (0.1, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(distances, distances[1:]))
    # D is the Mahalanobis norm of the mean shift under (Σ_r + Σ_t)/2 + 1e-3·I (here Σ_t = Σ_r)
    d = torch.full((16,), 2.0, dtype=torch.float64)
    expected = torch.sqrt(d @ torch.linalg.solve(cov + 1e-3 * torch.eye(16, dtype=torch.float64), d))
    assert distances[-1] == pytest.approx(expected.item(), rel=1e-9)


def test_pristine_patch_selection():
    x = photo('astronaut')[0]
    flat = x.clone()
    flat[:, :96, :96] = 0.5  # a featureless patch is never the sharpest
    chosen = select_pristine_patches(flat)
    assert 1 <= chosen.shape[0] < (512 // 96) ** 2
    s = sharpness(chosen)
    assert (s > 0).all()
    grey = x.mean(0, keepdim=True).expand(3, -1, -1)[None, :, :96, :96]
    assert colourfulness(grey).item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ low-level network
def test_ll_file_zero_shot_scores_and_dtype_roundtrip(tmp_path, ll_file):
    net = GRepQ(pretrained_model_path=ll_file)
    x = photo('chelsea')  # 300x451, native size
    q = net(x)
    assert q.shape == (1, 1) and 0 < q.item() <= 0.5
    assert net.forward_features(x).shape == (1, 128)
    half = tmp_path / 'half.safetensors'
    net.save_pretrained(str(half), dtype=torch.float16)
    assert half.stat().st_size < 0.6 * os.path.getsize(ll_file)
    reloaded = GRepQ(pretrained_model_path=str(half))
    assert reloaded.ll.backbone.conv1.weight.dtype == torch.float32
    assert reloaded(x).item() == pytest.approx(q.item(), abs=1e-3)
    with pytest.raises(ValueError, match='smaller than one 96x96'):
        net(torch.rand(1, 3, 80, 200))


def test_linear_head_needs_fitting_and_roundtrips(tmp_path, ll_file):
    net = GRepQ(pretrained_model_path=ll_file, head='linear')
    x = photo('coffee')
    with pytest.raises(RuntimeError, match='no fitted linear head'):
        net(x)
    with torch.no_grad():  # what scripts/fit_regressor.py's set_linear_head does
        net.feat_mean.normal_()
        net.feat_std.uniform_(0.5, 2.0)
        net.head.weight.normal_()
    path = tmp_path / 'grepq-ll-test.safetensors'
    net.save_pretrained(str(path), {'head': 'ridge'})
    again = GRepQ(pretrained_model_path=str(path), head='linear')
    assert torch.allclose(again(x), net(x), atol=1e-5)


# ---------------------------------------------------------------------- CLIP (random)
@pytest.fixture(scope='module')
def random_clip(tmp_path_factory):
    """A CLIP with a randomly initialised RN50 image tower (and a tiny text tower), saved like a checkpoint."""
    from crossiqa_pyiqa.grepq.clip_tower import clip

    torch.manual_seed(0)
    model = clip.model.CLIP(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                            vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                            transformer_layers=1).eval()
    path = tmp_path_factory.mktemp('clip') / 'RN50-random.pt'
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    return str(path), model.float()


def test_high_level_path_end_to_end_random_rn50(random_clip, ll_file):
    from crossiqa_pyiqa.grepq.clip_tower import clip, normalise_for_clip

    path, _ = random_clip
    net = GRepQ(pretrained_model_path=ll_file, use_clip=True, clip_model_path=path)
    reference = clip.model.build_model(torch.load(path)).float().eval()  # openai-clip's own model of the file
    x = photo('astronaut')[:, :, :224, :224]
    with torch.no_grad():
        # the text tower is frozen into the prompt embeddings
        text = reference.encode_text(clip.tokenize(['a good photo.', 'a bad photo.'])).float()
        assert torch.allclose(net.text_features, text, atol=1e-5)
        # at 224 px the resizable attention pool is exactly CLIP's own
        assert torch.allclose(net.high_level_features(x), reference.visual(normalise_for_clip(x)), atol=1e-4)
        y = photo('chelsea')  # 300x451: position embedding interpolated to a 9x14 grid
        feats = net.forward_features(y)
        assert feats.shape == (1, 1024 + 128) and torch.isfinite(feats).all()
        q = net(y)
        q_l, q_h = net.zeroshot_low(y), net.zeroshot_high(y)
    assert q.item() == pytest.approx((q_l + q_h).item(), abs=1e-6) and 0 < q.item() < 1.5
    # through pyiqa, with the same files
    metric = pyiqa.create_metric('grepq-zs', device='cpu', pretrained_model_path=ll_file, clip_model_path=path)
    assert metric(y).item() == pytest.approx(q.item(), abs=1e-5)


def test_missing_clip_weights_is_a_clear_error(tmp_path, monkeypatch, ll_file):
    monkeypatch.setenv('HOME', str(tmp_path))  # empty ~/.cache/clip
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')  # offline: no download (tests/test_download.py covers online)
    with pytest.raises(FileNotFoundError, match=r'\.cache/clip/RN50\.pt.*clip_model_path') as info:
        GRepQ(pretrained_model_path=ll_file, use_clip=True)
    assert 'downloads are off (HF_HUB_OFFLINE=1)' in str(info.value) and 'grepq-ll-zs needs no CLIP' in str(info.value)
    assert 'openaipublic.azureedge.net/clip/models/' in str(info.value)
    with pytest.raises(FileNotFoundError, match='nowhere/RN50.pt'):
        pyiqa.create_metric('grepq-zs', device='cpu', pretrained_model_path=ll_file,
                            clip_model_path=str(tmp_path / 'nowhere' / 'RN50.pt'))


def test_highlevel_task_trains_and_exports_a_self_contained_file(tmp_path, random_clip, ll_file):
    from crossiqa_pyiqa.train.tasks import build_task

    path, _ = random_clip
    opt = {'task': 'grepq_highlevel',
           'network': {'type': 'GRepQ', 'pretrained_model_path': ll_file, 'clip_model_path': path},
           'datasets': {'train': {'crop_size': 64, 'batch_size_per_gpu': 6}},
           'train': {'loss': {'group_size': 2, 'temperature': 0.5}}}
    task = build_task(opt)
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(('model.clip_visual.', 'projection.')) for n in trainable)
    before = task.model.clip_visual.attnpool.c_proj.weight.clone()
    text_before = task.model.text_features.clone()
    optim = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-3)
    crops = (photo('astronaut')[0, :, :384, :256].unfold(1, 64, 64).unfold(2, 64, 64)
             .permute(1, 2, 0, 3, 4).reshape(-1, 3, 64, 64)[:6] * 255).to(torch.uint8)
    task.train()
    for step in range(2):
        loss, logs = task(crops, torch.Generator().manual_seed(step))
        assert math.isfinite(loss.item()) and logs['loss'] == loss.item()
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert not torch.equal(before, task.model.clip_visual.attnpool.c_proj.weight)
    assert torch.equal(text_before, task.model.text_features)
    out = task.export(str(tmp_path / 'grepq_hl.safetensors'), {'note': 'test'})
    net = GRepQ(pretrained_model_path=out)  # no clip_model_path needed: the file holds the tower
    assert net.config['use_clip'] and net.info['clip_finetuned']
    assert torch.equal(net.clip_visual.attnpool.c_proj.weight, task.model.clip_visual.attnpool.c_proj.weight)
    assert torch.isfinite(net(photo('coffee')[:, :, :200, :200])).all()


def test_fit_grepq_full_head_on_clip_and_low_level_features(tmp_path, random_clip, ll_file):
    """grepq-<dataset>: fit_regressor on [CLIP 1024 ‖ low-level 128] (random RN50 here), then the
    metric by name; the fitted file carries the CLIP tower, so it scores without the CLIP file."""
    import json
    import shutil

    from test_regression import load_script, make_toy_dataset, write_options

    path, _ = random_clip
    clip_copy = tmp_path / 'RN50-copy.pt'
    shutil.copy(path, clip_copy)
    dataset = make_toy_dataset(tmp_path / 'data')
    opt = write_options(tmp_path / 'regress.yml', dataset, tmp_path / 'cache')
    out, summary = tmp_path / 'grepq-toyclip.safetensors', tmp_path / 'summary.json'
    fit = load_script('fit_regressor')
    args = ['-opt', str(opt), '--encoder', ll_file, '--out', str(out), '--summary', str(summary),
            '--name', 'grepq-toyclip', '--set', 'encoder.options.use_clip=true']
    assert fit.main(args + [f'encoder.options.clip_model_path={tmp_path}/nowhere.pt']) == 1  # clear error, no file
    assert not out.exists()
    assert fit.main(args + [f'encoder.options.clip_model_path={clip_copy}']) == 0
    s = json.loads(summary.read_text())
    assert s['feature_dim'] == 1024 + 128 and s['srcc_median'] > 0.5  # measured 0.91 (blur levels)
    clip_copy.unlink()  # the fitted file must not depend on it any more
    metric = pyiqa.create_metric('grepq-toyclip', device='cpu')
    net = GRepQ(pretrained_model_path=str(out), head='linear')
    assert net.config['use_clip']
    y = photo('chelsea')[:, :, :200, :240]
    with torch.no_grad():
        by_hand = net.head(net.standardise(net.forward_features(y)))
    assert metric(y).item() == pytest.approx(by_hand.item(), rel=1e-4, abs=1e-3)


# ------------------------------------------------------------------ low-level training
def test_lowlevel_task_trains_with_shared_trainer(tmp_path, image_dir):
    from crossiqa_pyiqa.train.trainer import Trainer

    opt = {'name': 'grepq_test', 'task': 'grepq_lowlevel', 'manual_seed': 0,
           'datasets': {'train': {'dataroots': [str(image_dir)], 'crop_size': 96, 'batch_size_per_gpu': 2,
                                  'num_worker_per_gpu': 0, 'cache_images': True}},
           'versions': {'types': ['gaussian_blur', 'white_noise'], 'levels': [4]},
           'fragments': {'grid': 2, 'size': 32},  # 64x64 mosaics keep the test fast
           'network': {'type': 'GRepQ'},
           'train': {'total_iter': 5, 'optim': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0.0},
                     'scheduler': {'warmup_iter': 1}, 'grad_clip': 5.0,
                     'loss': {'tau': 0.5, 'fsim_window': 64}},
           'pristine': {'dataroot': [str(image_dir)]},
           'logger': {'print_freq': 1, 'save_checkpoint_freq': 100, 'visual_freq': 5, 'use_tb_logger': False}}
    trainer = Trainer(opt, str(tmp_path / 'run'))
    start = {k: v.clone() for k, v in trainer.task.model.state_dict().items()}
    summary = trainer.train()
    assert summary['steps'] == 5 and not summary['interrupted']
    assert math.isfinite(summary['loss_first']) and math.isfinite(summary['loss_last'])
    changed = [k for k, v in trainer.task.model.ll.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, start['ll.' + k])]
    assert any(k.startswith('backbone.conv1') for k in changed) and any(k.startswith('mlp.') for k in changed)
    assert os.listdir(tmp_path / 'run' / 'visualization')
    out = trainer.export(str(tmp_path / 'grepq_ll.safetensors'))
    net = GRepQ(pretrained_model_path=out)  # export carries the pristine statistics
    assert net.info['has_pristine_stats'] and net.info['pristine_n_patches'] > 1
    assert 0 < net(photo('rocket')[:, :, :200, :300]).item() <= 0.5


# ------------------------------------------------------------------------ pyiqa metric
def test_registered_arch_and_metrics():
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.registry import ARCH_REGISTRY

    assert ARCH_REGISTRY.get('GRepQ') is GRepQ
    for name in ('grepq-ll-zs', 'grepq-zs'):
        assert name in pyiqa.list_models(metric_mode='NR')
        assert DEFAULT_CONFIGS[name]['lower_better'] is False


@pytest.mark.skipif(not SHIPPED.is_file(), reason=f'{SHIPPED} not built yet (scripts/grepq_pristine_stats.py)')
def test_shipped_ll_zs_ranks_heavy_distortions_below_originals():
    """Basis: the shipped encoder was trained so that distorted versions move away from the reference
    in feature space, and the pristine statistics come from sharp, colourful patches; heavy blur
    (σ = 4 px) or heavy noise (σ = 0.1) moves the patch statistics away from them, so D grows and Q_L
    falls. Measured when the weights were built: on the central 240×240 of these photographs (and
    on the full photographs, and on rocket / immunohistochemistry) Q_L falls by ≥ 0.004 (docs/GREPQ.md)."""
    metric = pyiqa.create_metric('grepq-ll-zs', device='cpu', pretrained_model_path=str(SHIPPED))
    g = torch.Generator().manual_seed(0)
    for name in ('astronaut', 'coffee', 'chelsea'):
        full = photo(name)
        top, left = (full.shape[-2] - 240) // 2, (full.shape[-1] - 240) // 2
        x = full[:, :, top:top + 240, left:left + 240]
        blurred = torch.from_numpy(np.stack([skimage.filters.gaussian(c, sigma=4) for c in x[0].numpy()]))[None]
        noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        q, q_blur, q_noise = (metric(v.float()).item() for v in (x, blurred, noisy))
        assert q > q_blur and q > q_noise, (name, q, q_blur, q_noise)
    default = pyiqa.create_metric('grepq-ll-zs', device='cpu')  # the packaged file is the default
    assert default(x).item() == pytest.approx(q)
