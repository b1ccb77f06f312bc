"""The 'pairs' zero-shot head: a direction fitted on synthetic pairs only, ridge chosen on held-out types."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import crossiqa_pyiqa  # noqa: F401
from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA
from crossiqa_pyiqa.regression.head import set_pairs_direction
from crossiqa_pyiqa.regression.zeroshot import pairs_direction

torch.set_num_threads(1)


def _synthetic_pairs(rng: np.random.Generator, n_types: int = 10, per_type: int = 40, dim: int = 60):
    """Each type moves features along its own direction; all share a common 'quality' component."""
    common = rng.normal(size=dim)
    own = rng.normal(size=(n_types, dim))
    clean = rng.normal(size=(n_types * per_type, dim)) * 3
    types = np.repeat([f't{i}' for i in range(n_types)], per_type)
    levels = rng.integers(1, 6, size=len(types)).astype(float)
    shift = np.stack([common + 2.0 * own[int(t[1:])] for t in types]) * levels[:, None] * 0.3
    degraded = clean - shift
    return clean, degraded, levels, types, common


def test_pairs_direction_generalises_to_held_out_types_and_scores_through_the_network(tmp_path):
    rng = np.random.default_rng(0)
    clean, degraded, levels, types, common = _synthetic_pairs(rng)
    features = np.concatenate([clean, degraded])
    d = pairs_direction(features, clean - degraded, levels, types)
    assert set(d.cv_accuracy) == {1e1, 1e2, 1e3, 1e4, 1e5, 1e6} and d.alpha in d.cv_accuracy
    best = max(d.cv_accuracy, key=d.cv_accuracy.get)
    # one-SE rule: the strongest ridge within one standard error of the best held-out-type accuracy
    assert d.alpha >= best and d.cv_accuracy[d.alpha] >= d.cv_accuracy[best] - d.cv_se
    assert all(d.cv_accuracy[a] < d.cv_accuracy[best] - d.cv_se for a in d.cv_accuracy if a > d.alpha)
    # an unseen distortion type that shares only the common component is still ordered
    fresh = rng.normal(size=(200, 60)) * 3
    unseen = fresh - (common + 2.0 * rng.normal(size=60)) * 0.9
    score = lambda f: ((f - d.mean) / d.std) @ d.coef  # noqa: E731
    assert (score(fresh) > score(unseen)).mean() > 0.9

    with pytest.raises(ValueError, match='at least 2 distortion types'):
        pairs_direction(features, clean - degraded, levels, np.array(['one'] * len(levels)))
    with pytest.raises(ValueError, match='diffs'):
        pairs_direction(features, clean - degraded, levels[:-1], types)


def test_pairs_head_in_a_half_precision_file_scores_like_its_formula(tmp_path):
    import pyiqa

    torch.manual_seed(0)
    opts = dict(size='lite0', feature_tokens=['mean', 'std'], feature_blocks=[1, 7], feature_scales=[1.0])
    net = CrossIQA(pretrained=False, **opts)
    assert net.config['zeroshot'] == 'pairs' and not hasattr(net, 'pristine_cov')  # no F x F covariance
    dim = net.feature_dim
    rng = np.random.default_rng(1)

    class Direction:
        mean = rng.normal(size=dim)
        std = rng.uniform(0.5, 2.0, size=dim)
        coef = rng.normal(size=dim)

    set_pairs_direction(net, Direction)
    net.info = {'has_pristine_stats': True, 'zeroshot': 'pairs'}
    path = tmp_path / 'zs.safetensors'
    net.save_pretrained(str(path), dtype=torch.float16)
    from safetensors.torch import load_file

    stored = load_file(str(path))
    assert stored['zs_coef'].dtype == torch.float32
    assert stored['encoder.backbone.conv_stem.weight'].dtype == torch.float16
    metric = pyiqa.create_metric('crossiqa-zs', pretrained_model_path=str(path), head='zeroshot', device='cpu')
    x = torch.rand(1, 3, 96, 128)
    loaded = CrossIQA(pretrained_model_path=str(path), head='zeroshot')
    with torch.no_grad():
        f = loaded.forward_features(x).double().numpy()
    expected = ((f - Direction.mean) / Direction.std) @ Direction.coef
    assert float(metric(x)) == pytest.approx(float(expected[0]), rel=1e-4, abs=1e-3)
    assert metric.lower_better is False  # a quality score, not a distance

    empty = tmp_path / 'no_zs.safetensors'
    net.info = {}
    net.save_pretrained(str(empty))
    with pytest.raises(ValueError, match='zero-shot statistics'):
        CrossIQA(pretrained_model_path=str(empty), head='zeroshot')
