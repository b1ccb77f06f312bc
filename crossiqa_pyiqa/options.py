"""One reader and one validator for every options file of the plugin.

- Reading: YAML through a *safe* loader (no ``!!python/...`` tag can run code), key
  order kept, and numbers read as YAML 1.2 reads them: ``1e6``, ``1.5e-4`` and ``-2E3``
  are floats (PyYAML implements YAML 1.1, where they are strings, so a learning rate
  ``1e-4`` silently became the string ``'1e-4'``). ``--set key.path=value`` overrides
  use the same rules.
- Validation: each kind of file has a schema of known keys per section. An unknown key
  (``self_weigth``, ``manual_sed``) or a missing required one raises :class:`OptionsError`
  naming the key, its section, the file, a close match and the valid keys.

Kinds: ``pretrain`` (scripts/pretrain_crossiqa.py; per ``task``), ``regress``
(scripts/fit_regressor.py), ``benchmark_metrics`` / ``benchmark_datasets``
(scripts/benchmark.py ``--metric_opt`` / ``--data_opt``) and ``train`` (pyiqa's own
training harness, which reads the file itself: check one with
``python -m crossiqa_pyiqa.options FILE``).
"""
from __future__ import annotations

import copy
import difflib
import os
import re
import sys
from typing import Any, Callable, Iterable, Mapping

import yaml

__all__ = ['OptionsError', 'load_options', 'apply_overrides', 'parse_value', 'to_plain', 'validate_options',
           'check_file', 'SafeOrderedLoader']


class OptionsError(ValueError):
    """An options file (or override) holds an unknown key, misses a required one, or cannot be read."""


# ------------------------------------------------------------------------------ reading
class SafeOrderedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only) that reads YAML 1.2 numbers: ``1e6`` is a float."""


SafeOrderedLoader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'''^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
                    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$''', re.X),
    list('-+0123456789.'))


def to_plain(obj: Any) -> Any:
    """OrderedDicts → dicts, tuples → lists (for JSON, checkpoints and YAML dumps)."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML 1.2 reads it (``1e6`` → 1000000.0, ``[1, 2]`` → a list)."""
    return yaml.load(text, Loader=SafeOrderedLoader)


def load_options(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Read an options file safely; with ``kind``, also validate it (see :func:`validate_options`)."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Options file {path} does not exist.')
    try:
        with open(path) as f:
            opt = yaml.load(f, Loader=SafeOrderedLoader)
    except yaml.YAMLError as error:
        raise OptionsError(f'Options file {path} is not valid plain YAML: {error}') from None
    if not isinstance(opt, dict):
        raise OptionsError(f'Options file {path} does not hold a mapping at top level.')
    opt = to_plain(opt)
    if kind is not None:
        validate_options(opt, kind, source=path)
    return opt


def apply_overrides(opt: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` assignments (value parsed as YAML 1.2), like pyiqa's ``--force_yml``."""
    opt = copy.deepcopy(opt)
    for item in assignments:
        if '=' not in item:
            raise OptionsError(f'Override {item!r} is not of the form key.path=value')
        key, value = item.split('=', 1)
        node = opt
        parts = key.split('.')
        if not all(parts):
            raise OptionsError(f'Override {item!r}: empty key in {key!r}')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise OptionsError(f'Override {item!r}: {part!r} is not a mapping in the options')
        try:
            node[parts[-1]] = parse_value(value)
        except yaml.YAMLError as error:
            raise OptionsError(f'Override {item!r}: the value is not valid YAML ({error})') from None
    return opt


# ---------------------------------------------------------------------------- schemas
ANY = object()  # any value (a leaf, or a mapping checked elsewhere)


class MapOf:
    """A mapping with free keys (metric or dataset names) whose values all follow ``schema``."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema


class Keys:
    """A mapping with known keys computed when needed (``valid()`` → key names; values not checked)."""

    def __init__(self, valid: Callable[[], Iterable[str]], what: str = '') -> None:
        self.valid, self.what = valid, what


REQUIRED = '__required__'

#: pyiqa dataset options (pyiqa/data/*) plus the plugin's own (distortion types, groups).
DATASET_KEYS = {k: ANY for k in (
    'name', 'type', 'dataroot_target', 'dataroot_ref', 'meta_info_file', 'split_file', 'split_index', 'split_ratio',
    'override_phase', 'phase', 'mos_range', 'mos_normalize', 'lower_better', 'img_range', 'augment', 'val_types',
    'val_num', 'list_imgs', 'mode', 'attribute', 'num_worker_per_gpu', 'batch_size_per_gpu', 'use_shuffle',
    'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory', 'persistent_workers', 'num_prefetch_queue', 'num_gpu',
    'distortion_type_column', 'distortion_type_regex', 'group_column', 'split_name', 'dist_type_regex')}


def _arch_keys(arch: str) -> set[str]:
    """Constructor arguments and config keys of a plugin architecture (the ``network`` section)."""
    import inspect

    if arch == 'GRepQ':
        from crossiqa_pyiqa.archs.grepq_arch import DEFAULT_CONFIG, GRepQ as cls
        config = set(DEFAULT_CONFIG)
    else:
        from crossiqa_pyiqa.archs.crossiqa_arch import CONFIG_KEYS, CrossIQA as cls
        config = set(CONFIG_KEYS)
    params = {p for p in inspect.signature(cls.__init__).parameters if p not in ('self', 'config')}
    return params | config | {'type'}


def _network_keys() -> Callable[[], set[str]]:
    return lambda: _arch_keys('CrossIQA') | _arch_keys('GRepQ')


def _degradation_keys() -> set[str]:
    import inspect

    from crossiqa_pyiqa.degradations import DegradationSampler

    return {p for p in inspect.signature(DegradationSampler.__init__).parameters if p != 'self'}


LOSS_KEYS: dict[str, tuple[str, ...]] = {
    'crossiqa_pretext': ('self_weight', 'norm_pix', 'lowfreq_weight', 'highfreq_weight', 'invariance_weight',
                         'invariance_temperature', 'cross_partner'),
    'crossiqa_cached_pretext': ('self_weight', 'colour_weight', 'fine_weight', 'middle_weight'),
    'grepq_lowlevel': ('tau', 'fsim_window', 'fsim_downsample'),
    'grepq_highlevel': ('group_size', 'temperature', 'projection_dim'),
}


def pretrain_schema(task: str | None) -> dict[str, Any]:
    """Options of ``scripts/pretrain_crossiqa.py`` (the trainer) for one task."""
    task = task or 'crossiqa_pretext'
    arch = 'GRepQ' if task.startswith('grepq') else 'CrossIQA'
    schema: dict[str, Any] = {
        REQUIRED: {'datasets', 'train'},
        'name': ANY, 'task': ANY, 'manual_seed': ANY, 'num_threads': ANY, 'num_gpu': ANY, 'is_train': ANY,
        'datasets': {REQUIRED: {'train'},
                     'train': {REQUIRED: {'dataroots', 'crop_size', 'batch_size_per_gpu'},
                               'name': ANY, 'dataroots': ANY, 'crop_size': ANY, 'batch_size_per_gpu': ANY,
                               'num_worker_per_gpu': ANY, 'cache_images': ANY, 'view_cache': ANY}},
        'network': Keys(lambda: _arch_keys(arch), f'{arch} options'),
        'train': {REQUIRED: {'total_iter'},
                  'total_iter': ANY, 'grad_clip': ANY, 'mask_ratio': ANY,
                  'optim': {'type': ANY, 'lr': ANY, 'weight_decay': ANY, 'betas': ANY, 'eps': ANY, 'amsgrad': ANY,
                            'backbone_lr_scale': ANY},
                  'scheduler': {'warmup_iter': ANY, 'min_lr_ratio': ANY},
                  'loss': {k: ANY for k in LOSS_KEYS.get(task, ())}},
        'logger': {'print_freq': ANY, 'save_checkpoint_freq': ANY, 'keep_checkpoints': ANY, 'visual_freq': ANY,
                   'use_tb_logger': ANY},
        'dist_params': {'backend': ANY, 'port': ANY},
    }
    if task in ('crossiqa_pretext', 'crossiqa_cached_pretext'):
        schema[REQUIRED] = schema[REQUIRED] | {'network'}
        schema['degradations'] = Keys(_degradation_keys, 'DegradationSampler options')
    if task == 'grepq_lowlevel':
        schema['versions'] = {'types': ANY, 'levels': ANY, 'random_types': ANY, 'pool': ANY}
        schema['fragments'] = {'grid': ANY, 'size': ANY}
        schema['pristine'] = {'dataroot': ANY, 'sharpness_ratio': ANY, 'colour_ratio': ANY}
    if task == 'grepq_highlevel':
        schema['train'].pop('mask_ratio')
    return schema


def regress_schema() -> dict[str, Any]:
    """Options of ``scripts/fit_regressor.py``."""
    from crossiqa_pyiqa.regression.options import REGRESSION_DEFAULTS
    from crossiqa_pyiqa.regression.ranking_pairs import RANKING_DEFAULTS

    regression: dict[str, Any] = {k: ANY for k in REGRESSION_DEFAULTS}
    regression['ranking'] = {k: ANY for k in RANKING_DEFAULTS}
    return {
        'name': ANY,
        'dataset': DATASET_KEYS,
        'datasets': MapOf(DATASET_KEYS),
        'encoder': {'pretrained_model_path': ANY, 'random_seed': ANY, 'options': Keys(_network_keys(), 'network options')},
        'regression': regression,
        'cache_dir': ANY,
    }


BENCHMARK_METRIC = {REQUIRED: {'metric_opts'}, 'metric_opts': Keys(_network_keys(), 'metric_opts'),
                    'metric_mode': ANY, 'lower_better': ANY, 'score_range': ANY, 'ranking': ANY, 'seed': ANY,
                    'probe': ANY}


def _harness_dataset() -> dict[str, Any]:
    return dict(DATASET_KEYS)


def train_schema() -> dict[str, Any]:
    """pyiqa's training harness (``options/train``): the keys pyiqa 0.1.16 reads, the network checked here."""
    return {
        'name': ANY, 'model_type': ANY, 'num_gpu': ANY, 'manual_seed': ANY, 'is_train': ANY, 'dist': ANY,
        'datasets': MapOf(_harness_dataset()),
        'network': Keys(_network_keys(), 'network options'),
        'path': {k: ANY for k in ('pretrain_network', 'strict_load', 'resume_state', 'param_key_g',
                                  'ignore_resume_networks', 'experiments_root', 'models', 'training_states', 'log',
                                  'visualization', 'results_root')},
        'train': {k: ANY for k in ('optim', 'optim_finetune', 'scheduler', 'total_iter', 'warmup_iter',
                                   'mos_loss_opt', 'metric_loss_opt', 'finetune_start_iter', 'use_ref',
                                   'ema_decay', 'finetune_steps')},
        'val': {'val_freq': ANY, 'save_img': ANY, 'pbar': ANY, 'key_metric': ANY, 'metrics': ANY},
        'logger': {'print_freq': ANY, 'save_checkpoint_freq': ANY, 'save_latest_freq': ANY, 'use_tb_logger': ANY,
                   'wandb': ANY, 'log_imgs_freq': ANY},
        'dist_params': {'backend': ANY, 'port': ANY},
    }


def schema_for(kind: str, opt: Mapping[str, Any] | None = None) -> Any:
    if kind == 'pretrain':
        return pretrain_schema((opt or {}).get('task'))
    if kind == 'regress':
        return regress_schema()
    if kind == 'benchmark_metrics':
        return MapOf(BENCHMARK_METRIC)
    if kind == 'benchmark_datasets':
        return MapOf(DATASET_KEYS)
    if kind == 'train':
        return train_schema()
    raise ValueError(f"Unknown options kind {kind!r}; valid: ['benchmark_datasets', 'benchmark_metrics', "
                     "'pretrain', 'regress', 'train']")


# ------------------------------------------------------------------------- validation
def _unknown(key: str, where: str, valid: Iterable[str], source: str) -> OptionsError:
    valid = sorted(str(v) for v in valid)
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ''
    section = f'{where}.{key}' if where else str(key)
    return OptionsError(f"Unknown option '{section}'{source}{hint}; valid keys in "
                        f"{where or 'the top level'}: {valid}")


def _check(node: Any, schema: Any, where: str, source: str) -> None:
    if schema is ANY or node is None:
        return
    if isinstance(schema, MapOf):
        if not isinstance(node, dict):
            raise OptionsError(f"Option '{where}'{source} must be a mapping, got {type(node).__name__}")
        for key, value in node.items():
            _check(value, schema.schema, f'{where}.{key}' if where else str(key), source)
        return
    if isinstance(schema, Keys):
        if not isinstance(node, dict):
            raise OptionsError(f"Option '{where}'{source} must be a mapping, got {type(node).__name__}")
        valid = set(schema.valid())
        for key in node:
            if key not in valid:
                raise _unknown(key, where, valid, source)
        return
    if not isinstance(node, dict):
        raise OptionsError(f"Option '{where}'{source} must be a mapping of {sorted(k for k in schema if k != REQUIRED)},"
                           f' got {type(node).__name__} {node!r}')
    valid = [k for k in schema if k != REQUIRED]
    for key, value in node.items():
        if key not in schema or key == REQUIRED:
            raise _unknown(key, where, valid, source)
        _check(value, schema[key], f'{where}.{key}' if where else str(key), source)
    missing = sorted(k for k in schema.get(REQUIRED, ()) if k not in node or node[k] is None)
    if missing:
        raise OptionsError(f"Missing option(s) {[f'{where}.{k}' if where else k for k in missing]}{source}; "
                           f"the section {where or 'top level'} has keys {sorted(node)}")


def validate_options(opt: Mapping[str, Any], kind: str, source: str | None = None) -> None:
    """Raise :class:`OptionsError` for any key the schema of ``kind`` does not know, or a missing required one."""
    _check(dict(opt), schema_for(kind, opt), '', f' in {source}' if source else '')


def guess_kind(path: str, opt: Mapping[str, Any]) -> str:
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for folder, kind in (('pretrain', 'pretrain'), ('regress', 'regress'), ('train', 'train')):
        if folder in parts[:-1]:
            return kind
    if 'benchmark' in parts[:-1]:
        first = next(iter(opt.values()), None)
        return 'benchmark_metrics' if isinstance(first, dict) and 'metric_opts' in first else 'benchmark_datasets'
    if 'model_type' in opt:
        return 'train'
    if 'regression' in opt or 'encoder' in opt:
        return 'regress'
    return 'pretrain'


def check_file(path: str, kind: str | None = None) -> str:
    """Read and validate one options file; returns the kind it was checked as."""
    opt = load_options(path)
    kind = kind or guess_kind(path, opt)
    validate_options(opt, kind, source=path)
    return kind


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog='python -m crossiqa_pyiqa.options',
                                     description='Check options files for unknown or missing keys.')
    parser.add_argument('files', nargs='+')
    parser.add_argument('--kind', default=None, help='pretrain | regress | benchmark_metrics | benchmark_datasets | '
                        'train (default: from the folder)')
    args = parser.parse_args(argv)
    bad = 0
    for path in args.files:
        try:
            kind = check_file(path, args.kind)
            print(f'ok ({kind}): {path}')
        except (OptionsError, FileNotFoundError) as error:
            print(f'error: {error}', file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
