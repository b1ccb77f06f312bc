#!/usr/bin/env python
"""Why does a CrossIQA score prefer PolyU's real noisy shots? Five measurements in one run.

    python tools/real_noise_probe.py [-m crossiqa] [--polyu datasets/polyu/CroppedImages] [--out runs/real_noise_probe]

1. **Which part of the real noise moves the score**: each clean mean image plus one component
   of its residual (noisy - clean): all of it, its luma part, its chroma part, its low band
   (Gaussian sigma 2 px) and its high band; the fraction of pairs where the clean image scores
   higher. A component that *raises* the score is read as detail.
2. **Do the features see the noise**: a direction fitted on synthetic pairs only (pristine
   BSDS500 + McMaster crops vs the same crop with ``camera_noise`` / ``camera_grain`` at a random
   level, least squares on standardised differences, no MOS), applied to PolyU's pairs; and the
   metric's ``noise`` diagnosis head (``explain``), when its weight file has one.
3. **What a score that listens to it would cost**: the score minus gamma x the ``noise`` head's
   raw output, and ``crossiqa-noiseaware``'s form (gamma = the map's cost of noise x the strength
   clipped to [0, 1]), CLIVE 10 seeded splits (plain ridge refitted per split, the fit protocol of
   ``options/regress/crossiqa_livec.yml``) against PolyU's fraction.

4. **Where the preference for grain lives**: the shipped head's score(clean) - score(noisy) split
   by feature group (each stage's mean / std, ``q``); then heads that read only stages >= k
   (k = 0, 3, 4, 5, 6), plain ridge and the ridge+ranking recipe, each minus gamma x the ``noise``
   head on the same CLIVE splits. A metric without diagnosis heads (a ``tools/pretext_study.py``
   fit) skips 3 and is penalised by the ``camera_noise`` direction of 2, in units of its CLIVE std:
   the same measurement for the frozen backbone and a pretext encoder. With ``--level-checkpoint``
   (a run with ``train.loss.level_weight`` > 0) the penalty is that pretext's own noise reading
   instead: its level head applied to the features' ``q`` (gamma in units of its CLIVE std); a metric
   whose weight file carries the level head (``CrossIQA.level_head``) uses its own. With
   ``--level-direction CKPT`` it is a direction fitted on the metric's own features to the same target
   (``level_direction``: pairs drawn by that run's degradations, no MOS), which a frozen backbone has too.
5. **How loud real noise is next to CLIVE's photos**: a pixel noise floor (``noise_floor``) of
   PolyU's noisy and clean shots and of every CLIVE photo, and its rank correlation with CLIVE's MOS.
6. With ``--calibrated-penalty``, **section 4's penalty fixed without PolyU and without MOS**
   (``calibrated_sweep``): only the reading above a quantile of clean photos' reading is charged, at
   the split head's own cost of a unit of it on synthetic noise (``scripts/fit_noise_penalty.py``).
7. With ``--cv-gamma``, **section 4's penalty with gamma chosen by CLIVE's MOS alone** (``cv_gamma_choice``):
   gamma and the ridge alpha by k-fold CV inside each CLIVE training split, then scored on the split's test
   part and on PolyU. Nothing is read off PolyU; a gamma that CLIVE does not pay for is not chosen.

Writes ``probe.json`` and ``probe.md`` under ``--out``. On a 2-core CPU: 7.4 min with
``--readout-heads ridge`` (CLIVE features computed, then cached under the options' ``cache_dir``),
about 26 min with the default ``both`` beside other jobs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'scripts'))


def _load(path: str) -> torch.Tensor:
    from crossiqa_pyiqa.inputs import read_image

    return read_image(path)[None]


def _gblur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from crossiqa_pyiqa.degradations._ops import filter2d, gaussian_kernel1d

    k = gaussian_kernel1d(sigma, int(3 * sigma)).to(x.dtype)
    return filter2d(x, k[:, None] * k[None, :])


def noise_floor(x: torch.Tensor, quantile: float = 0.2) -> float:
    """A pixel-level noise floor: a low quantile of the local (5x5) std of the luma high-pass.

    In flat areas the high-pass holds only noise, so a low quantile reads the noise level;
    in a photo without flat areas it also reads fine texture. No features, no MOS.
    """
    from crossiqa_pyiqa.degradations._ops import box_mean

    y = x.double().mean(1, keepdim=True)
    h = y - _gblur(y, 1.0)
    sd = (box_mean(h * h, 2) - box_mean(h, 2) ** 2).clamp(min=0).sqrt()
    return float(torch.quantile(sd.flatten()[::7], quantile))


def level_direction(net, degradations: dict, n_images: int = 500, crop: int = 224, seed: int = 0,
                    groups: Sequence[str] = ('noise',)) -> tuple:
    """The frozen-backbone analogue of a pretext level head, no MOS: ridge directions (features, groups) on the
    metric's own standardised feature differences of two views of one crop, drawn by the pretext's degradation
    sampler, against the views' strength difference in each of ``groups`` (``LEVEL_GROUPS``, the level term's
    target)."""
    from crossiqa_pyiqa.degradations import DegradationSampler
    from crossiqa_pyiqa.paths import resolve
    from crossiqa_pyiqa.regression.features import folder_images, progress
    from crossiqa_pyiqa.train.cached_pretext import level_groups

    sampler = DegradationSampler(**degradations)
    members = [set(types) for types in level_groups(groups).values()]
    strength = lambda spec: [max((float(lv) / 5 for t, lv in spec if t in m), default=0.0)  # noqa: E731
                             for m in members]
    paths = [p for d in ('datasets/pristine/bsds500', 'datasets/pristine/mcmaster') for p in folder_images(resolve(d))]
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    paths = [paths[i] for i in rng.choice(len(paths), min(n_images, len(paths)), replace=False)]
    fa, fb, target = [], [], []
    with torch.inference_mode():
        for p in progress(iterable=paths, desc='level direction', unit='crop'):
            x = _load(p)
            h, w = x.shape[-2:]
            y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
            views, specs = sampler(x[..., y0:y0 + crop, x0:x0 + crop].expand(2, -1, -1, -1).contiguous(), gen)
            f = net.forward_features(views).double().numpy()
            fa.append(f[0])
            fb.append(f[1])
            target.append(np.subtract(strength(specs[0]), strength(specs[1])))
    fa, fb, target = np.stack(fa), np.stack(fb), np.stack(target)
    std = np.concatenate([fa, fb]).std(0) + 1e-6
    d = np.concatenate([(fa - fb) / std, (fb - fa) / std])
    y = np.concatenate([target, -target])
    return np.linalg.solve(d.T @ d + 10 * np.eye(d.shape[1]), d.T @ y), std


def components(noisy: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
    """The clean image plus each part of the real residual (clamped to [0, 1])."""
    r = noisy - clean
    luma = r.mean(1, keepdim=True).expand_as(r)
    low = _gblur(r, 2.0)
    parts = {'all': r, 'luma': luma, 'chroma': r - luma, 'low band': low, 'high band': r - low}
    return {k: (clean + v).clamp(0, 1) for k, v in parts.items()}


def synthetic_direction(net, types: list[str], n_images: int = 120, crop: int = 256, seed: int = 0) -> tuple:
    """Least-squares direction on standardised (pristine - degraded) feature differences, no MOS."""
    from crossiqa_pyiqa.degradations import apply
    from crossiqa_pyiqa.paths import resolve
    from crossiqa_pyiqa.regression.features import folder_images

    paths = [p for d in ('datasets/pristine/bsds500', 'datasets/pristine/mcmaster') for p in folder_images(resolve(d))]
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    paths = [paths[i] for i in rng.choice(len(paths), min(n_images, len(paths)), replace=False)]
    clean, degraded = [], []
    with torch.inference_mode():
        for i, p in enumerate(paths):
            x = _load(p)
            h, w = x.shape[-2:]
            y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
            x = x[..., y0:y0 + crop, x0:x0 + crop]
            clean.append(net.forward_features(x))
            t = types[i % len(types)]
            degraded.append(net.forward_features(apply(x, t, float(rng.uniform(1, 4)), generator=gen)))
    fc, fd = torch.cat(clean).double().numpy(), torch.cat(degraded).double().numpy()
    std = np.concatenate([fc, fd]).std(0) + 1e-6
    d = (fc - fd) / std
    x = np.concatenate([d, -d])
    y = np.concatenate([np.ones(len(d)), -np.ones(len(d))])
    return np.linalg.solve(x.T @ x + 10 * np.eye(x.shape[1]), x.T @ y), std


def block_attribution(net, f_clean: np.ndarray, f_noisy: np.ndarray) -> list[dict]:
    """The metric's head's score(clean) - score(noisy), split by feature group (``feature_groups``).

    Each group's share is ``coef . (z_clean - z_noisy)`` over its columns (z: the head's own
    standardisation); the shares sum to the score difference. Per group: the fraction of pairs
    where it favours the clean image, and its mean push.
    """
    coef = net.head.weight.detach().double().numpy()[0]
    diff = (f_clean - f_noisy) / net.feat_std.double().numpy() * coef  # standardised difference x weight
    return [{'group': label, 'clean_favoured': float((diff[:, cols].sum(1) > 0).mean()),
             'mean_push': float(diff[:, cols].sum(1).mean())} for label, _, cols in net.feature_groups()]


def stage_columns(net, k: int) -> np.ndarray:
    """The feature columns a head reading only stages >= k (and ``q``) sees."""
    return np.concatenate([np.arange(sl.start, sl.stop) for _, stage, sl in net.feature_groups()
                           if stage is None or stage >= k])


def readout_sweep(net, clive: np.ndarray, mos: np.ndarray, splits, reg: dict, f_clean: np.ndarray,
                  f_noisy: np.ndarray, noise: tuple, rows=None, lowest: tuple = (0, 3, 4, 5, 6),
                  gammas: tuple = (0, 10, 20, 40), all_stages_probe=None, probes: dict | None = None) -> list[dict]:
    """Heads that read only stages >= k (and ``q``), each minus gamma x the ``noise`` head.

    A ridge per CLIVE split (the fit protocol), plain and, with ``rows`` (the synthetic
    ranking pairs), the shipped ridge+ranking recipe; CLIVE SRCC is the median over splits,
    PolyU's clean-preferred fraction the median over the splits' heads. ``all_stages_probe``:
    the plain ridge probe on every feature, when the caller has fitted it already. ``probes``: filled with
    each k's plain ridge fit, for a later section to reuse.
    """
    from scipy.stats import spearmanr

    from crossiqa_pyiqa.regression.features import progress
    from crossiqa_pyiqa.regression.protocol import linear_probe
    from crossiqa_pyiqa.regression.ridge import RankingRows

    clive_noise, n_clean, n_noisy = noise
    out = []
    runs = [(k, h) for h in ('ridge', 'ridge+ranking')[:1 + (rows is not None)] for k in lowest]
    for k, head in progress(iterable=runs, desc='readouts (10 splits each)', unit='head'):
        cols = stage_columns(net, k)
        sub = None if head == 'ridge' else RankingRows(rows.diffs[:, cols], rows.margins, rows.weight)
        if head == 'ridge' and len(cols) == clive.shape[1] and all_stages_probe is not None:
            probe = all_stages_probe  # the same fit, already made for section 3
        else:
            probe = linear_probe(clive[:, cols], mos, splits, reg['alphas'], reg['cv_folds'], reg['seed'],
                                 reg['cv_scoring'], ranking=sub)
        if head == 'ridge' and probes is not None:
            probes[k] = probe
        s_c = [m.predict(f_clean[:, cols]) for m in probe.models]
        s_n = [m.predict(f_noisy[:, cols]) for m in probe.models]
        for g in gammas:
            out.append({'head': head, 'stages_from': k, 'gamma': g, 'dims': int(len(cols)),
                        'clive_srcc_median': float(np.median(
                            [spearmanr(p - g * clive_noise[te], mos[te])[0]
                             for p, te in zip(probe.predictions, probe.test_indices)])),
                        'polyu_clean_preferred': float(np.median(
                            [((c - g * n_clean) > (n - g * n_noisy)).mean() for c, n in zip(s_c, s_n)]))})
    return out


def calibrated_sweep(net, clive: np.ndarray, mos: np.ndarray, splits, reg: dict, polyu: tuple, noise: tuple,
                     photo_feats: np.ndarray, photo_noise: np.ndarray, lowest: tuple = (0, 4, 5),
                     quantiles: tuple = (0.25, 0.5, 0.75), probes: dict | None = None) -> list[dict]:
    """The penalty ``gamma * max(0, noise - threshold)`` fixed as ``scripts/fit_noise_penalty.py`` fixes it, for
    each split's plain ridge reading stages >= k: threshold = a quantile of clean photos' reading, gamma = the
    head's own cost of a unit of the reading on synthetic noise (``photo_feats``: clean photo first, then its
    noisy versions). No PolyU and no MOS beyond the split's own head; then CLIVE and PolyU as in section 4.
    ``probes``: section 4's plain ridge fits by k (``readout_sweep``), reused instead of fitted again."""
    from scipy.stats import spearmanr

    from fit_noise_penalty import clean_preferred, fit_gamma

    from crossiqa_pyiqa.regression.protocol import linear_probe

    (f_clean, f_noisy), (clive_noise, n_clean, n_noisy) = polyu, noise
    out = []
    for k in lowest:
        cols = stage_columns(net, k)
        probe = (probes or {}).get(k) or linear_probe(clive[:, cols], mos, splits, reg['alphas'], reg['cv_folds'],
                                                      reg['seed'], reg['cv_scoring'])
        for quantile in quantiles:
            threshold = float(np.quantile(photo_noise[:, 0], quantile))
            gate = lambda a: np.maximum(a - threshold, 0)  # noqa: E731
            rows = []
            for model, pred, test in zip(probe.models, probe.predictions, probe.test_indices):
                score = model.predict(photo_feats[..., cols].reshape(-1, len(cols))).reshape(photo_noise.shape)
                gamma = fit_gamma(score, photo_noise, threshold)
                rows.append((gamma, spearmanr(pred - gamma * gate(clive_noise[test]), mos[test])[0],
                             ((model.predict(f_clean[:, cols]) - gamma * gate(n_clean))
                              > (model.predict(f_noisy[:, cols]) - gamma * gate(n_noisy))).mean(),
                             clean_preferred(score), clean_preferred(score - gamma * gate(photo_noise))))
            g, clive_srcc, polyu_pref, plain, penalised = np.median(np.asarray(rows, dtype=float), axis=0)
            out.append({'stages_from': k, 'quantile': quantile, 'gamma_median': float(g),
                        'clive_srcc_median': float(clive_srcc), 'polyu_clean_preferred': float(polyu_pref),
                        'synthetic_clean_preferred': float(plain), 'synthetic_clean_preferred_penalised':
                        float(penalised), 'clive_charged': float((clive_noise > threshold).mean())})
    return out


def cv_gamma_choice(net, clive: np.ndarray, mos: np.ndarray, splits, reg: dict, polyu: tuple, noise: tuple,
                    gammas: Sequence[float] = tuple(range(0, 65, 5)), lowest: tuple = (0, 4),
                    scorings: tuple = ('mse', 'srcc')) -> list[dict]:
    """Section 4's penalty with gamma chosen by CLIVE alone: in each split's training part, the (alpha, gamma) whose
    k-fold score of ``ridge - gamma x noise`` is best (``scoring`` as the fit protocol's ``cv_scoring``, or SRCC),
    then the split's head refitted with that alpha and scored on its test part and on PolyU. Neither PolyU nor a
    test row chooses anything; ties go to the larger alpha and the smaller gamma."""
    from scipy.stats import spearmanr

    from crossiqa_pyiqa.regression.ridge import cv_predictions, fit_ridge

    (f_clean, f_noisy), (clive_noise, n_clean, n_noisy) = polyu, noise
    alphas, gammas = [float(a) for a in reg['alphas']], np.asarray(gammas, dtype=np.float64)
    out = []
    for k in lowest:
        cols = stage_columns(net, k)
        folds = [cv_predictions(clive[np.ix_(train, cols)], mos[train], alphas, reg['cv_folds'], reg['seed'] + i)
                 for i, (train, _) in enumerate(splits)]
        for scoring in scorings:
            rows = []
            for i, (train, test) in enumerate(splits):
                y, n = mos[train], clive_noise[train]
                score = np.zeros((len(alphas), len(gammas)))
                for val, pred in folds[i]:  # pred: (n_val, alphas); penalised: (n_val, alphas, gammas)
                    penalised = pred[:, :, None] - gammas * n[val][:, None, None]
                    if scoring == 'mse':
                        score -= ((penalised - y[val][:, None, None]) ** 2).mean(axis=0)
                    else:
                        score += np.array([[spearmanr(penalised[:, a, g], y[val])[0] for g in range(len(gammas))]
                                           for a in range(len(alphas))])
                best = np.argwhere(score >= score.max() - 1e-12)
                a, g = max(best, key=lambda ag: (ag[0], -ag[1]))
                model = fit_ridge(clive[np.ix_(train, cols)], y, alphas[a])
                gamma = gammas[g]
                rows.append((gamma, spearmanr(model.predict(clive[np.ix_(test, cols)]) - gamma * clive_noise[test],
                                              mos[test])[0],
                             ((model.predict(f_clean[:, cols]) - gamma * n_clean)
                              > (model.predict(f_noisy[:, cols]) - gamma * n_noisy)).mean()))
            r = np.asarray(rows, dtype=float)
            out.append({'stages_from': k, 'scoring': scoring, 'gammas': [float(v) for v in r[:, 0]],
                        'clive_srcc_median': float(np.median(r[:, 1])),
                        'polyu_clean_preferred': float(np.median(r[:, 2]))})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-m', '--metric', default='crossiqa')
    p.add_argument('--polyu', default='datasets/polyu/CroppedImages')
    p.add_argument('--regress', default='options/regress/crossiqa_livec.yml')
    p.add_argument('--out', default='runs/real_noise_probe')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--level-checkpoint', default=None,
                   help='a pretext run with the level term (trainer checkpoint of the encoder the metric uses): '
                        "its level head's noise reading of q is the penalty of section 4, in place of the "
                        '`camera_noise` direction (tools/level_head_check.py)')
    p.add_argument('--level-direction', default=None, metavar='CHECKPOINT',
                   help="section 4's penalty: a direction fitted on the metric's own features to the noise-strength "
                        "difference of pairs drawn by this pretext run's degradations (the frozen backbone's analogue "
                        'of --level-checkpoint)')
    p.add_argument('--calibrated-penalty', action='store_true',
                   help="6: section 4's penalty gated at a quantile of clean photos' reading, gamma fitted on "
                        'synthetic noise (scripts/fit_noise_penalty.py), per split; no PolyU, no MOS (3 min more)')
    p.add_argument('--cv-gamma', action='store_true',
                   help="7: section 4's penalty with gamma chosen with the ridge alpha by k-fold CV inside each CLIVE "
                        'training split: no PolyU, no test rows (1-2 min more)')
    p.add_argument('--readout-heads', choices=('ridge', 'both'), default='both',
                   help='section 4: plain ridge only, or also ridge+ranking (about 20 min more on 2 cores)')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    import pyiqa

    import crossiqa_pyiqa  # noqa: F401  (registers the metrics)
    from independent_check import find_pairs  # scripts/: the pairing --real_noise uses

    from crossiqa_pyiqa.paths import resolve

    pairs = [(str(noisy), str(clean)) for _, noisy, clean in find_pairs(args.polyu)]
    net = pyiqa.create_metric(args.metric, device='cpu').net
    result: dict = {'metric': args.metric, 'n_pairs': len(pairs)}

    # 1. components of the real residual
    fn, fc, comp = [], [], {}
    with torch.inference_mode():
        for a, b in pairs:
            n, c = _load(a), _load(b)
            fn.append(net.forward_features(n))
            fc.append(net.forward_features(c))
            s_c = float(net.score_features(fc[-1]))
            for k, x in components(n, c).items():
                comp.setdefault(k, []).append(s_c > float(net(x)))
    fn, fc = torch.cat(fn), torch.cat(fc)
    result['clean_preferred_over_component'] = {k: float(np.mean(v)) for k, v in comp.items()}

    # 2. do the features see it
    directions = {t: synthetic_direction(net, [t]) for t in ('camera_noise', 'camera_grain')}
    f_clean, f_noisy = fc.double().numpy(), fn.double().numpy()
    for t, (w, std) in directions.items():
        result[f'synthetic_direction_{t}'] = float((((f_clean - f_noisy) / std) @ w > 0).mean())

    from scipy.stats import spearmanr

    from crossiqa_pyiqa.optionfile import load_options
    from crossiqa_pyiqa.regression.features import dataset_features, progress
    from crossiqa_pyiqa.regression.fit import protocol_data
    from crossiqa_pyiqa.regression.protocol import linear_probe

    opt = load_options(args.regress)
    reg, dataset, all_records, records, keep, splits = protocol_data(opt)
    feats = dataset_features(net, dataset, all_records, opt.get('cache_dir'))[keep]
    has_heads = getattr(net, 'diagnosis', None) is not None
    if has_heads:  # the penalty: the `noise` diagnosis head's raw output
        heads = net.require_diagnosis()
        k = list(heads.outputs).index('noise')
        signal = lambda f: heads.raw(torch.as_tensor(f))[:, k].numpy()  # noqa: E731
        scale = 1.0
        with torch.inference_mode():
            n_n, n_c, clive_noise = signal(fn), signal(fc), signal(feats)
        result['noise_head_higher_on_noisy'] = float((n_n > n_c).mean())
        penalty, gammas = 'the `noise` head (raw)', (0, 10, 20, 40)
    elif args.level_checkpoint or (getattr(net, 'level_head', None) is not None and not args.level_direction):
        # the pretext's own noise reading: its level head on the features' q (the metric file's, or a checkpoint's)
        q_slices = [sl for label, _, sl in net.feature_groups() if label == 'q']
        if not q_slices:
            raise SystemExit(f'--level-checkpoint: {args.metric} has no q in its features (a frozen backbone?)')
        q_slice, level_head = q_slices[0], net.level_head
        if args.level_checkpoint:
            from level_head_check import load_task

            task = load_task(args.level_checkpoint)
            level_head = task.level_head
            with torch.inference_mode():  # the checkpoint must hold the metric's own encoder
                q_run = task.model.encoder(_load(pairs[0][1]))['cls'][0].double().numpy()
            if not np.allclose(q_run, f_clean[0, q_slice], rtol=1e-3, atol=1e-3):
                raise SystemExit(f'--level-checkpoint {args.level_checkpoint} is not the encoder of {args.metric}: '
                                 'its q differs on the first PolyU image')
        with torch.inference_mode():
            signal = lambda f: level_head(  # noqa: E731
                torch.as_tensor(f, dtype=torch.float32)[:, q_slice])[:, 0].numpy()
            clive_signal = signal(feats)
            scale = clive_signal.std()
            clive_noise, n_c, n_n = clive_signal / scale, signal(f_clean) / scale, signal(f_noisy) / scale
        result['level_head_higher_on_noisy'] = float((n_n > n_c).mean())
        penalty, gammas = "the pretext level head's noise reading (per CLIVE std)", (0, 0.5, 1, 2, 4)
    elif args.level_direction:  # the same target as the level term, fitted on the metric's features
        from crossiqa_pyiqa.train.trainer import read_checkpoint

        w, std = level_direction(net, read_checkpoint(args.level_direction)['options']['degradations'])
        signal = lambda f: (f / std) @ w[:, 0]  # noqa: E731  (higher = noisier)
        clive_signal = signal(feats)
        scale = clive_signal.std()
        clive_noise, n_c, n_n = clive_signal / scale, signal(f_clean) / scale, signal(f_noisy) / scale
        result['level_direction_higher_on_noisy'] = float((n_n > n_c).mean())
        penalty, gammas = 'the level direction fitted on the features (per CLIVE std)', (0, 0.5, 1, 2, 4)
    else:  # no diagnosis heads: the camera_noise direction (no MOS), in units of its CLIVE std
        w, std = directions['camera_noise']
        signal = lambda f: -(f / std) @ w  # noqa: E731  (higher = noisier)
        clive_signal = signal(feats)
        scale = clive_signal.std()
        clive_noise, n_c, n_n = clive_signal / scale, signal(f_clean) / scale, signal(f_noisy) / scale
        penalty, gammas = 'the `camera_noise` direction (per CLIVE std)', (0, 2, 4, 8)
    result['penalty'] = penalty

    probe = None
    if has_heads:
        # 3. the trade-off on CLIVE
        with torch.inference_mode():
            s_n, s_c = net.score_features(fn).flatten().numpy(), net.score_features(fc).flatten().numpy()
        probe = linear_probe(feats, records.mos, splits, reg['alphas'], reg['cv_folds'], reg['seed'],
                             reg['cv_scoring'])  # the fit protocol: alpha by CV inside each split
        preds = list(zip(probe.predictions, probe.test_indices))
        result['tradeoff'] = [
            {'gamma': g, 'clive_srcc_median': float(np.median([spearmanr(q - g * clive_noise[te], records.mos[te])[0]
                                                               for q, te in preds])),
             'polyu_clean_preferred': float(((s_c - g * n_c) > (s_n - g * n_n)).mean())}
            for g in (0, 10, 20, 40, 80)]
        # crossiqa-noiseaware: the noise *strength* (clipped to [0, 1]) at the map's cost per unit of noise (this
        # file's own fit, explanation.map_penalty_for)
        from crossiqa_pyiqa.explanation import map_penalty_for

        g = map_penalty_for(net)['noise']
        clip = lambda a: np.clip(a, 0, 1)  # noqa: E731
        result['noiseaware'] = {
            'gamma': g,
            'clive_srcc_median': float(np.median([spearmanr(q - g * clip(clive_noise[te]), records.mos[te])[0]
                                                  for q, te in preds])),
            'polyu_clean_preferred': float(((s_c - g * clip(n_c)) > (s_n - g * clip(n_n))).mean())}

    if net.noise_penalty:  # the metric's own penalty (fixed gamma and source), on the same splits' plain ridge
        if probe is None:
            probe = linear_probe(feats, records.mos, splits, reg['alphas'], reg['cv_folds'], reg['seed'],
                                 reg['cv_scoring'])
        with torch.inference_mode():
            charge = lambda f: net.noise_penalty * net.penalised_noise(  # noqa: E731
                torch.as_tensor(f, dtype=torch.float32)).double().numpy()
            own = (net.score_features(fc)[:, 0] > net.score_features(fn)[:, 0]).float().mean().item()
            clive_charge, c_charge, n_charge = charge(feats), charge(f_clean), charge(f_noisy)
        result['metric_penalty'] = {
            'gamma': net.noise_penalty, 'source': net.noise_source, 'polyu_clean_preferred_metric': own,
            'clive_srcc_median': float(np.median([spearmanr(p - clive_charge[te], records.mos[te])[0]
                                                  for p, te in zip(probe.predictions, probe.test_indices)])),
            'clive_srcc_median_without': float(np.median(probe.srcc)),
            'polyu_clean_preferred': float(np.median([
                ((m.predict(f_clean) - c_charge) > (m.predict(f_noisy) - n_charge)).mean() for m in probe.models]))}

    # 4. where the preference for grain lives, and readouts without it
    result['attribution'] = block_attribution(net, f_clean, f_noisy)
    rows = None
    if reg['ranking'] is not None and args.readout_heads == 'both':
        from crossiqa_pyiqa.regression.ranking_pairs import ranking_pairs

        rows = ranking_pairs(net, reg['ranking'], opt.get('cache_dir')).as_rows(reg['ranking'])
    plain_probes: dict = {}
    result['readouts'] = readout_sweep(net, feats, records.mos, splits, reg, f_clean, f_noisy,
                                       (clive_noise, n_c, n_n), rows, gammas=gammas, all_stages_probe=probe,
                                       probes=plain_probes)

    if args.calibrated_penalty:  # 6. the penalty calibrated without PolyU and without MOS
        from fit_noise_penalty import DEFAULT_TYPES, fitting_photos, noise_photo_features

        photo_feats = noise_photo_features(net, fitting_photos('datasets/pristine', 42), DEFAULT_TYPES, 4.0,
                                           progress=lambda it: progress(iterable=it, desc='calibration photos',
                                                                        unit='photo'))
        with torch.inference_mode():
            photo_noise = signal(photo_feats.reshape(-1, photo_feats.shape[-1])).reshape(photo_feats.shape[:2]) / scale
        result['calibrated'] = calibrated_sweep(net, feats, records.mos, splits, reg, (f_clean, f_noisy),
                                                (clive_noise, n_c, n_n), photo_feats, photo_noise,
                                                probes=plain_probes)

    if args.cv_gamma:  # 7. gamma chosen by CLIVE's MOS alone
        result['cv_gamma'] = cv_gamma_choice(net, feats, records.mos, splits, reg, (f_clean, f_noisy),
                                             (clive_noise, n_c, n_n))

    # 5. how loud is the real noise next to what CLIVE's photos carry, and what CLIVE's MOS says of it
    floors = {'polyu_noisy': [noise_floor(_load(a)) for a, _ in pairs],
              'polyu_clean': [noise_floor(_load(b)) for _, b in pairs],
              'clive': [noise_floor(dataset[int(i)]['img'][None]) for i in
                        progress(iterable=np.arange(len(all_records))[keep], desc='CLIVE noise floors', unit='img')]}
    clive_floor = np.asarray(floors['clive'])
    result['noise_floor'] = {
        **{f'{k}_quartiles': [float(v) for v in np.quantile(f, (0.25, 0.5, 0.75))] for k, f in floors.items()},
        'clive_above_polyu_noisy_median': float((clive_floor > np.median(floors['polyu_noisy'])).mean()),
        'clive_srcc_floor_mos': float(spearmanr(clive_floor, records.mos)[0]),
        'clive_srcc_noise_penalty_mos': float(spearmanr(clive_noise, records.mos)[0])}
    result['seconds'] = round(time.time() - t0, 1)

    out = Path(resolve(args.out))
    out.mkdir(parents=True, exist_ok=True)
    (out / 'probe.json').write_text(json.dumps(result, indent=1))
    md = [f"# Real-noise probe: {args.metric}, {len(pairs)} PolyU pairs ({result['seconds'] / 60:.1f} min)\n",
          '| clean image + this part of the real residual | clean preferred |', '|---|---|',
          *[f'| {k} | {v:.2f} |' for k, v in result['clean_preferred_over_component'].items()], '',
          '| direction fitted on synthetic pairs only (no MOS) | clean preferred on PolyU |', '|---|---|',
          *[f"| {k.replace('synthetic_direction_', '')} pairs | {v:.2f} |" for k, v in result.items()
            if k.startswith('synthetic_direction_')]]
    if has_heads:
        head = result['noise_head_higher_on_noisy']
        md += [f'| the `noise` diagnosis head (higher on the noisy shot) | {head:.2f} |',
               '', '| score - gamma x noise head | CLIVE SRCC (10 splits, plain ridge) | PolyU clean preferred |',
               '|---|---|---|',
               *[f"| {r['gamma']} | {r['clive_srcc_median']:.4f} | {r['polyu_clean_preferred']:.2f} |"
                 for r in result['tradeoff']],
               '| {gamma} x noise strength (clipped to [0, 1]; `crossiqa-noiseaware`) | {clive_srcc_median:.4f} | '
               '{polyu_clean_preferred:.2f} |'.format(**result['noiseaware'])]
    if 'metric_penalty' in result:
        r = result['metric_penalty']
        md += ['', f"| the metric's own penalty ({r['gamma']:g} x its `{r['source']}` noise) | CLIVE SRCC (10 splits, "
               'plain ridge) | PolyU clean preferred (split heads / the metric) |', '|---|---|---|',
               f"| without | {r['clive_srcc_median_without']:.4f} | |",
               f"| with | {r['clive_srcc_median']:.4f} | {r['polyu_clean_preferred']:.2f} / "
               f"{r['polyu_clean_preferred_metric']:.2f} |"]
    for key, label in (('level_head_higher_on_noisy', "the pretext level head's noise reading"),
                       ('level_direction_higher_on_noisy', 'the level direction fitted on the features')):
        if key in result:
            md += [f'| {label} (higher on the noisy shot) | {result[key]:.2f} |']
    md += ['', '| feature group (the metric\'s head) | favours the clean image | mean push |', '|---|---|---|',
           *[f"| {r['group']} | {r['clean_favoured']:.2f} | {r['mean_push']:+.2f} |" for r in result['attribution']],
           '', f'| head | reads stages >= k (+ q); minus gamma x {penalty} | dims | CLIVE SRCC | '
           'PolyU clean preferred |',
           '|---|---|---|---|---|',
           *[f"| {r['head']} | k = {r['stages_from']}, gamma {r['gamma']} | {r['dims']} | "
             f"{r['clive_srcc_median']:.4f} | {r['polyu_clean_preferred']:.2f} |" for r in result['readouts']]]
    if 'calibrated' in result:
        md += ['', f'| plain ridge, stages >= k (+ q); minus gamma x max(0, {penalty} - threshold), calibrated '
               'without PolyU | gamma (median) | CLIVE photos charged | synthetic noise: clean preferred, plain / '
               'penalised | CLIVE SRCC | PolyU clean preferred |', '|---|---|---|---|---|---|',
               *[f"| k = {r['stages_from']}, threshold: clean photos' {r['quantile']:.2f} quantile | "
                 f"{r['gamma_median']:.2f} | {r['clive_charged']:.2f} | {r['synthetic_clean_preferred']:.2f} / "
                 f"{r['synthetic_clean_preferred_penalised']:.2f} | {r['clive_srcc_median']:.4f} | "
                 f"{r['polyu_clean_preferred']:.2f} |" for r in result['calibrated']]]
    if 'cv_gamma' in result:
        md += ['', f'| plain ridge, stages >= k (+ q); minus gamma x {penalty}, gamma and alpha chosen by CV in each '
               'CLIVE training split | gamma per split | CLIVE SRCC | PolyU clean preferred |', '|---|---|---|---|',
               *[f"| k = {r['stages_from']}, CV score {r['scoring']} | {' '.join(f'{g:g}' for g in r['gammas'])} | "
                 f"{r['clive_srcc_median']:.4f} | {r['polyu_clean_preferred']:.2f} |" for r in result['cv_gamma']]]
    nf = result['noise_floor']
    md += ['', '| pixel noise floor (x 1000; 5x5 std of the luma high-pass, 20th percentile) | quartiles |',
           '|---|---|',
           *[f"| {k} | {' / '.join(f'{1000 * v:.2f}' for v in nf[f'{k}_quartiles'])} |" for k in floors],
           f"| CLIVE photos above PolyU's noisy median | {nf['clive_above_polyu_noisy_median']:.2f} |",
           f"| CLIVE: SRCC(noise floor, MOS) | {nf['clive_srcc_floor_mos']:+.3f} |",
           f"| CLIVE: SRCC({penalty}, MOS) | {nf['clive_srcc_noise_penalty_mos']:+.3f} |"]
    (out / 'probe.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
