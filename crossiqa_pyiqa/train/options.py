"""pyiqa-style YAML options for the plugin's trainers, with command-line overrides, and their schemas.

The reader lives in :mod:`crossiqa_pyiqa.optionfile`; this module keeps the trainers' names
for it and holds the schemas of the ``network`` section (any plugin architecture), of
``scripts/pretrain_crossiqa.py``'s files (:func:`pretrain_schema`) and of pyiqa's training
harness (:func:`train_schema`). :mod:`crossiqa_pyiqa.options` checks any file by kind.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from pyiqa.utils.options import dict2str

from crossiqa_pyiqa.optionfile import (ANY, DATASET_KEYS, REQUIRED, Keys, MapOf, OptionsError, apply_overrides,
                                       load_options, parse_value, to_plain, validate_schema)

__all__ = ['load_options', 'apply_overrides', 'dict2str', 'to_plain', 'validate_options', 'parse_value',
           'OptionsError', 'pretrain_schema', 'train_schema', 'network_keys']


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


def network_keys() -> Callable[[], set[str]]:
    return lambda: _arch_keys('CrossIQA') | _arch_keys('GRepQ')


def _degradation_keys() -> set[str]:
    import inspect

    from crossiqa_pyiqa.degradations import DegradationSampler

    return {p for p in inspect.signature(DegradationSampler.__init__).parameters if p != 'self'}


LOSS_KEYS: dict[str, tuple[str, ...]] = {
    'crossiqa_pretext': ('self_weight', 'norm_pix', 'lowfreq_weight', 'highfreq_weight', 'invariance_weight',
                         'invariance_temperature', 'cross_partner'),
    'crossiqa_cached_pretext': ('self_weight', 'colour_weight', 'fine_weight', 'middle_weight', 'level_weight',
                                'level_groups'),
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


def _harness_dataset() -> dict[str, Any]:
    return dict(DATASET_KEYS)


def train_schema() -> dict[str, Any]:
    """pyiqa's training harness (``options/train``): the keys pyiqa 0.1.16 reads, the network checked here."""
    return {
        'name': ANY, 'model_type': ANY, 'num_gpu': ANY, 'manual_seed': ANY, 'is_train': ANY, 'dist': ANY,
        'datasets': MapOf(_harness_dataset()),
        'network': Keys(network_keys(), 'network options'),
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


def validate_options(opt: Mapping[str, Any], kind: str = 'pretrain', source: str | None = None) -> None:
    """Check a trainer (``pretrain``) or pyiqa harness (``train``) options mapping; other kinds:
    :func:`crossiqa_pyiqa.options.validate_options`."""
    if kind == 'pretrain':
        schema = pretrain_schema(opt.get('task'))
    elif kind == 'train':
        schema = train_schema()
    else:
        raise ValueError(f'train.options checks pretrain and train files, not {kind!r}: '
                         'use crossiqa_pyiqa.options.validate_options')
    validate_schema(opt, schema, source)
