"""The regression stage: frozen encoder → cached features → ridge head → weight file.

``run_fit`` is what ``scripts/fit_regressor.py`` runs. It reports the 10-split linear
probe (alpha chosen inside each training split) and then fits the head that is
shipped on *all* images of the dataset, with alpha chosen by CV on all of them.
The written file holds the encoder, the head, its standardisation and provenance,
so ``pyiqa.create_metric(name)`` scores on the MOS scale of the dataset.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from crossiqa_pyiqa.regression.datasets import build_iqa_dataset, dataset_records, fit_records
from crossiqa_pyiqa.regression.features import dataset_features, encoder_fingerprint, folder_features
from crossiqa_pyiqa.regression.head import (load_encoder, set_linear_head, set_pairs_direction,
                                            set_pristine_statistics, standardise_np)
from crossiqa_pyiqa.regression.options import regression_options
from crossiqa_pyiqa.regression.protocol import linear_probe
from crossiqa_pyiqa.regression.ranking_pairs import ranking_pairs
from crossiqa_pyiqa.regression.ridge import fit_ridge, select_alpha
from crossiqa_pyiqa.regression.splits import random_splits, write_pyiqa_split_file
from crossiqa_pyiqa.regression.zeroshot import pairs_direction, pristine_statistics


def metric_name_for(dataset_name: str, arch: str = 'CrossIQA') -> str:
    prefix = 'grepq-' if arch == 'GRepQ' else 'crossiqa-'
    slug = re.sub(r'[^a-z0-9]+', '-', dataset_name.lower()).strip('-')
    return slug if slug.startswith(prefix) else f'{prefix}{slug}'


#: Fitted heads in the user weights dir are registered on import by these name prefixes.
METRIC_PREFIX = {'CrossIQA': 'crossiqa-', 'GRepQ': 'grepq-'}


def _entry_weight_file(cfg: dict[str, Any]) -> str | None:
    """The weight file a registered plugin metric scores with (None for pyiqa's own metrics)."""
    opts = cfg.get('metric_opts') or {}
    if opts.get('pretrained_model_path'):
        return str(opts['pretrained_model_path'])
    if opts.get('type') == 'CrossIQA':
        from crossiqa_pyiqa.archs.crossiqa_arch import DEFAULT_WEIGHTS, default_weight_path
        return default_weight_path(opts.get('weights', DEFAULT_WEIGHTS))
    if opts.get('type') == 'GRepQ':
        from crossiqa_pyiqa.archs.grepq_arch import default_weight_path as grepq_path
        return grepq_path(opts.get('weights', 'grepq_ll'))
    return None


def check_metric_name(name: str, arch: str, out: Path, default_out: bool) -> None:
    """Refuse a name that would shadow another metric, or that the next ``import crossiqa_pyiqa`` would not find."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9._+-]*', name or ''):
        raise ValueError(f'Metric name {name!r} must be letters, digits and ._+- (it names the weight file).')
    if name in DEFAULT_CONFIGS:
        cfg = DEFAULT_CONFIGS[name]
        current = _entry_weight_file(cfg)
        same = current is not None and os.path.realpath(current) == os.path.realpath(out)
        refit = current is not None and bool((cfg.get('metric_opts') or {}).get('pretrained_model_path'))
        if not (same or refit):  # pyiqa's own metrics and the packaged ones keep their names
            owner = 'pyiqa' if current is None else f'the plugin (weight file {current})'
            raise ValueError(f'--name {name!r} is already a metric of {owner}; scoring by that name would use it, '
                             'not this head. Choose another name (e.g. '
                             f'{METRIC_PREFIX.get(arch, "crossiqa-")}{name.split("-")[-1]}-mine).')
    prefix = METRIC_PREFIX.get(arch, 'crossiqa-')
    if default_out and not name.startswith(prefix):
        raise ValueError(f'--name {name!r}: fitted {arch} heads in the user weights dir are registered as metrics by '
                         f'names starting with {prefix!r}; use e.g. {prefix}{name}, or write elsewhere with --out.')


def _dataset_opt(opt: dict[str, Any]) -> dict[str, Any]:
    if 'dataset' in opt:
        return dict(opt['dataset'])
    datasets = opt.get('datasets') or {}
    if len(datasets) != 1:
        raise ValueError('The options need one `dataset:` section (pyiqa dataset options).')
    return dict(next(iter(datasets.values())))


class ProtocolData(NamedTuple):
    """What the 10-split protocol reads from regression options: the same for every probe."""

    reg: dict[str, Any]
    dataset: Any
    all_records: Any  # every dataset row (features are extracted for these)
    records: Any  # the fit rows (duplicates merged); ``keep`` selects them from ``all_records``
    keep: np.ndarray
    splits: list


def protocol_data(opt: dict[str, Any]) -> ProtocolData:
    """The dataset, fit records and seeded splits of ``fit_regressor``'s protocol (scripts probing
    other features reuse it, so their numbers are comparable row for row)."""
    reg = regression_options(opt)
    data_opt = _dataset_opt(opt)
    dataset = build_iqa_dataset(data_opt)
    all_records = dataset_records(dataset, {**data_opt, 'name': data_opt.get('name', 'dataset')})
    records, keep = fit_records(all_records, reg['train_ratio'], reg['cv_folds'])
    splits = random_splits(len(records), reg['n_splits'], reg['train_ratio'], reg['seed'], records.groups)
    return ProtocolData(reg, dataset, all_records, records, keep, splits)


def build_encoder(opt: dict[str, Any], encoder_file: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Encoder from ``--encoder``/``encoder.pretrained_model_path``, else random with ``encoder.random_seed``."""
    from crossiqa_pyiqa.weights import file_sha256

    enc = dict(opt.get('encoder') or {})
    path = encoder_file or enc.get('pretrained_model_path')
    options = dict(enc.get('options') or {})
    if path:
        net = load_encoder(path, **options)
        source = {'encoder_file': str(Path(path).resolve()), 'encoder_file_sha256': file_sha256(path)}
    else:
        seed = enc.get('random_seed')
        if seed is None:
            raise ValueError('No encoder: pass --encoder FILE, or set encoder.pretrained_model_path or '
                             'encoder.random_seed (random initialisation) in the options.')
        net = load_encoder(None, seed=int(seed), **options)
        source = {'encoder_file': None, 'encoder_random_seed': int(seed)}
    source['encoder_fingerprint'] = encoder_fingerprint(net)
    return net, source


def group_penalty_vector(net: torch.nn.Module, factors: dict[str, float] | None) -> np.ndarray | None:
    """One ridge-penalty factor per feature from ``regression.group_penalty`` ({feature group label: factor},
    labels of ``net.feature_groups()`` without their ``@scale`` tag); None when there are none."""
    if not factors:
        return None
    groups = net.feature_groups() if hasattr(net, 'feature_groups') else []
    labels = {label.split(' @')[0] for label, _, _ in groups}
    unknown = sorted(set(factors) - labels)
    if unknown:
        raise ValueError(f'regression.group_penalty names feature groups {unknown} that these features do not have; '
                         f'they have {sorted(labels)}')
    penalty = np.ones(sum(cols.stop - cols.start for _, _, cols in groups))
    for label, _, cols in groups:
        penalty[cols] = factors.get(label.split(' @')[0], 1.0)
    return penalty


def run_fit(opt: dict[str, Any], encoder_file: str | None = None, name: str | None = None,
            out: str | os.PathLike | None = None, pristine: str | None = None, summary: str | None = None,
            cache_dir: str | None = None, command: str | None = None, register: bool = True,
            split_file: str | None = None, half: bool = False) -> dict[str, Any]:
    """Probe, fit on all images, write the weight file (and the summary JSON). Returns the summary.

    ``half``: network weights stored in float16 (head and statistics stay float32).
    """
    from crossiqa_pyiqa.weights import user_weights_dir

    t0 = time.time()
    from crossiqa_pyiqa.regression.options import validate_regress

    validate_regress(opt)
    reg, dataset, all_records, records, keep, splits = protocol_data(opt)
    data_opt = _dataset_opt(opt)
    net, source = build_encoder(opt, encoder_file)
    arch = getattr(net, 'ARCH_NAME', 'CrossIQA')
    name = name or opt.get('name') or metric_name_for(records.name, arch)
    out = Path(out) if out else user_weights_dir() / f'{name}.safetensors'
    check_metric_name(name, arch, out, default_out=out.parent == user_weights_dir())
    cache_dir = cache_dir or opt.get('cache_dir')

    t1 = time.time()
    features = dataset_features(net, dataset, all_records, cache_dir)[keep]
    t_features = time.time() - t1

    rows, ranking_info, t_pairs = None, None, 0.0
    if reg['ranking'] is not None:
        t_pairs = time.time()
        pairs = ranking_pairs(net, reg['ranking'], cache_dir)
        rows = pairs.as_rows(reg['ranking'])
        t_pairs = time.time() - t_pairs

    t2 = time.time()
    if split_file:
        write_pyiqa_split_file(split_file, splits)
    penalty = group_penalty_vector(net, reg['group_penalty'])
    probe = linear_probe(features, records.mos, splits, reg['alphas'], reg['cv_folds'], reg['seed'],
                         reg['cv_scoring'], ranking=rows, penalty=penalty)
    alpha = select_alpha(features, records.mos, reg['alphas'], reg['cv_folds'], reg['seed'], reg['cv_scoring'],
                         penalty)
    model = fit_ridge(features, records.mos, alpha, rows, penalty)
    if rows is not None:
        wrong = ((pairs.diffs / model.std) @ model.coef) <= 0  # the better image (pristine or weaker) not above
        types = np.asarray(pairs.types)
        ranking_info = {**reg['ranking'].as_dict(), 'n_pairs': len(pairs), 'pairs_misordered': float(wrong.mean()),
                        'pairs_misordered_per_type': {t: float(wrong[types == t].mean()) for t in dict.fromkeys(types)}}
    set_linear_head(net, model)
    t_fit = time.time() - t2

    info: dict[str, Any] = {
        'metric_name': name,
        'has_fitted_head': True,
        'head': 'ridge' if rows is None else 'ridge+ranking',
        'ranking': ranking_info,
        'dataset': records.name,
        'dataset_type': data_opt.get('type'),
        'dataset_meta_info_file': str(data_opt.get('meta_info_file')),
        'dataset_identity': records.identity,
        'n_images': len(records),
        'n_duplicates_dropped': len(all_records) - len(records),
        'mos_range_fitted': [float(records.mos.min()), float(records.mos.max())],
        'alpha': alpha,
        'alpha_grid': reg['alphas'],
        'group_penalty': reg['group_penalty'],
        'cv_folds': reg['cv_folds'],
        'protocol': {'n_splits': reg['n_splits'], 'train_ratio': reg['train_ratio'], 'seed': reg['seed'],
                     **{k: v for k, v in probe.summary().items()}},
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': command or ' '.join(sys.argv),
        'has_pristine_stats': False,
        **source,
    }
    is_crossiqa = getattr(net, 'ARCH_NAME', 'CrossIQA') == 'CrossIQA'
    if pristine and not is_crossiqa:
        raise ValueError(f'--pristine builds image-level statistics for CrossIQA; {type(net).__name__} keeps its own '
                         'zero-shot statistics (for GRepQ: scripts/grepq_pristine_stats.py).')
    zs_kind = net.config.get('zeroshot', 'mahalanobis') if is_crossiqa else None
    if pristine and zs_kind == 'pairs':
        raise ValueError('--pristine builds the Mahalanobis zero-shot statistics; this encoder\'s zero-shot head is '
                         "'pairs', fitted from the synthetic ranking pairs (regression.ranking) without --pristine.")
    if zs_kind == 'mahalanobis':  # stale statistics would belong to another standardisation
        with torch.no_grad():
            net.pristine_mean.zero_()
            net.pristine_cov.copy_(torch.eye(net.pristine_cov.shape[0]))
    elif zs_kind == 'pairs':
        with torch.no_grad():
            net.zs_mean.zero_()
            net.zs_std.fill_(1.0)
            net.zs_coef.zero_()
        if rows is not None:  # no MOS: the synthetic pairs alone, ridge chosen on held-out distortion types
            direction = pairs_direction(pairs.features, pairs.diffs, pairs.level_gaps(), pairs.types)
            set_pairs_direction(net, direction)
            info.update({'has_pristine_stats': True, 'zeroshot': 'pairs', 'zeroshot_alpha': direction.alpha,
                         'zeroshot_cv_accuracy': direction.cv_accuracy, 'zeroshot_cv_se': direction.cv_se,
                         'zeroshot_alpha_rule': 'one-standard-error'})
    t_pristine = 0.0
    if pristine:
        t3 = time.time()
        pfeats, ppaths = folder_features(net, pristine, cache_dir)
        mean, cov = pristine_statistics(standardise_np(net, pfeats), reg['pristine_ridge'])
        set_pristine_statistics(net, mean, cov)
        info.update({'has_pristine_stats': True, 'pristine_dir': str(Path(pristine).resolve()),
                     'pristine_n_images': len(ppaths), 'pristine_ridge': reg['pristine_ridge']})
        t_pristine = time.time() - t3

    net.save_pretrained(str(out), info, dtype=torch.float16 if half else None)
    if register:
        from crossiqa_pyiqa.registration import register_metric

        register_metric(name, {'type': getattr(net, 'ARCH_NAME', 'CrossIQA'), 'pretrained_model_path': str(out),
                               'head': 'linear'})
    result = {
        'metric_name': name,
        'weight_file': str(out),
        'dataset': records.name,
        'n_images': len(records),
        'feature_dim': int(features.shape[1]),
        'alpha_full': alpha,
        **probe.summary(),
        'seconds': round(time.time() - t0, 2),
        'seconds_features': round(t_features, 2),
        'seconds_fit': round(t_fit, 2),
        'seconds_ranking_pairs': round(t_pairs, 2),
        'ranking': ranking_info,
        'seconds_pristine': round(t_pristine, 2),
        'has_pristine_stats': info['has_pristine_stats'],
        **source,
    }
    if summary:
        Path(summary).parent.mkdir(parents=True, exist_ok=True)
        with open(summary, 'w') as f:
            json.dump(result, f, indent=2)
    return result
