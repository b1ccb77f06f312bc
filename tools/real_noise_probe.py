#!/usr/bin/env python
"""Why does a CrossIQA score prefer PolyU's real noisy shots? Three measurements in one run.

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

Writes ``probe.json`` and ``probe.md`` under ``--out``. About 15 min on a 2-core CPU (CLIVE
features are cached under ``runs/cache`` after the first run).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('-m', '--metric', default='crossiqa')
    p.add_argument('--polyu', default='datasets/polyu/CroppedImages')
    p.add_argument('--regress', default='options/regress/crossiqa_livec.yml')
    p.add_argument('--out', default='runs/real_noise_probe')
    p.add_argument('--threads', type=int, default=2)
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
    for types in (['camera_noise'], ['camera_grain']):
        w, std = synthetic_direction(net, types)
        result[f'synthetic_direction_{types[0]}'] = float(((((fc - fn).double().numpy()) / std) @ w > 0).mean())
    has_heads = getattr(net, 'diagnosis', None) is not None
    if has_heads:
        heads = net.require_diagnosis()
        k = list(heads.outputs).index('noise')
        with torch.inference_mode():
            n_n, n_c = heads.raw(fn)[:, k].numpy(), heads.raw(fc)[:, k].numpy()
        result['noise_head_higher_on_noisy'] = float((n_n > n_c).mean())

        # 3. the trade-off on CLIVE
        from scipy.stats import spearmanr

        from crossiqa_pyiqa.optionfile import load_options
        from crossiqa_pyiqa.regression.features import dataset_features
        from crossiqa_pyiqa.regression.fit import protocol_data
        from crossiqa_pyiqa.regression.protocol import linear_probe

        opt = load_options(args.regress)
        reg, dataset, all_records, records, keep, splits = protocol_data(opt)
        feats = dataset_features(net, dataset, all_records, opt.get('cache_dir'))[keep]
        with torch.inference_mode():
            clive_noise = heads.raw(torch.as_tensor(feats)).numpy()[:, k]
            s_n, s_c = net.score_features(fn).flatten().numpy(), net.score_features(fc).flatten().numpy()
        probe = linear_probe(feats, records.mos, splits, reg['alphas'], reg['cv_folds'], reg['seed'],
                             reg['cv_scoring'])  # the fit protocol: alpha by CV inside each split
        preds = list(zip(probe.predictions, probe.test_indices))
        result['tradeoff'] = [
            {'gamma': g, 'clive_srcc_median': float(np.median([spearmanr(q - g * clive_noise[te], records.mos[te])[0]
                                                               for q, te in preds])),
             'polyu_clean_preferred': float(((s_c - g * n_c) > (s_n - g * n_n)).mean())}
            for g in (0, 10, 20, 40, 80)]
        # crossiqa-noiseaware: the noise *strength* (clipped to [0, 1]) at the map's cost per unit of noise
        from crossiqa_pyiqa.explanation import MAP_PENALTY

        g = MAP_PENALTY['noise']
        clip = lambda a: np.clip(a, 0, 1)  # noqa: E731
        result['noiseaware'] = {
            'gamma': g,
            'clive_srcc_median': float(np.median([spearmanr(q - g * clip(clive_noise[te]), records.mos[te])[0]
                                                  for q, te in preds])),
            'polyu_clean_preferred': float(((s_c - g * clip(n_c)) > (s_n - g * clip(n_n))).mean())}
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
    (out / 'probe.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
