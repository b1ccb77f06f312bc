"""Metric specifications for benchmarks: pyiqa's ``DEFAULT_CONFIGS`` entries plus a custom YAML.

A custom metric-options file uses pyiqa's format (as ``benchmark_results.py --metric_opt``),
with two optional keys of ours per metric:

- ``seed``: ``torch.manual_seed(seed)`` right before the network is built, so a
  randomly initialised encoder (``metric_opts: {type: CrossIQA, pretrained: false}``)
  is the same in every run;
- ``probe``: treat the metric as a feature extractor (``net.forward_features``) whose
  linear head is refitted per split. Default: true for CrossIQA with the linear head.
- ``ranking``: for probes, synthetic ranking pairs added to every head fit (the
  ``regression.ranking`` options of ``scripts/fit_regressor.py``, or the path of an
  options file whose ``regression.ranking`` is read).
"""
from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import torch

from crossiqa_pyiqa.archs.crossiqa_arch import DEFAULT_WEIGHTS as CROSSIQA_DEFAULT_WEIGHTS
from crossiqa_pyiqa.optionfile import ANY, REQUIRED, Keys, MapOf, load_options
from crossiqa_pyiqa.train.options import network_keys

OUR_KEYS = ('seed', 'probe', 'ranking')

#: Schema of one entry of a metric-options file (``--metric_opt``).
BENCHMARK_METRIC = {REQUIRED: {'metric_opts'}, 'metric_opts': Keys(network_keys(), 'metric_opts'),
                    'metric_mode': ANY, 'lower_better': ANY, 'score_range': ANY, 'ranking': ANY, 'seed': ANY,
                    'probe': ANY}


@dataclass
class MetricSpec:
    name: str
    metric_opts: dict[str, Any] = field(default_factory=dict)
    metric_mode: str = 'NR'
    lower_better: bool = False
    seed: int | None = None
    probe: bool | None = None  # None: decided from the built network
    ranking: dict[str, Any] | str | None = None  # probes only: regression.ranking options (or their file)

    def identity(self) -> dict[str, Any]:
        """What the cached scores depend on: options, seed and the content of any weight file named."""
        import os

        from crossiqa_pyiqa.weights import file_sha256

        ident: dict[str, Any] = {'name': self.name, 'metric_opts': self.metric_opts, 'seed': self.seed}
        path = self.metric_opts.get('pretrained_model_path') or packaged_weight_file(self.metric_opts)
        if path and os.path.isfile(path):  # a re-fitted file under the same name must not reuse old scores
            ident['weights_sha256'] = file_sha256(path)
        return ident


#: Plugin architectures that read a packaged weight file by name (``weights:``) and its default.
PACKAGED_WEIGHTS = {'CrossIQA': CROSSIQA_DEFAULT_WEIGHTS, 'GRepQ': 'grepq_ll'}


def packaged_weight_file(metric_opts: dict[str, Any]) -> str | None:
    """The packaged file a plugin metric loads when no path is given (it changes when a head is re-shipped)."""
    from crossiqa_pyiqa.weights import PACKAGE_WEIGHTS_DIR

    default = PACKAGED_WEIGHTS.get(metric_opts.get('type'))
    if default is None or metric_opts.get('pretrained') is False:
        return None
    return str(PACKAGE_WEIGHTS_DIR / f"{metric_opts.get('weights', default)}.safetensors")


def load_metric_opt_file(path: str) -> dict[str, dict[str, Any]]:
    custom = load_options(path, MapOf(BENCHMARK_METRIC))  # unknown keys fail, naming the key
    for name, cfg in custom.items():
        if not isinstance(cfg, dict) or 'metric_opts' not in cfg or 'type' not in (cfg['metric_opts'] or {}):
            raise ValueError(f'{path}: metric {name!r} needs `metric_opts:` with a `type:` (pyiqa format).')
    return custom


def resolve_metrics(names: list[str], custom: dict[str, dict[str, Any]] | None = None) -> list[MetricSpec]:
    """Specs for ``names`` (custom entries first, then pyiqa's DEFAULT_CONFIGS); unknown names fail early."""
    from crossiqa_pyiqa.registration import register
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    register()  # the plugin's metrics in DEFAULT_CONFIGS (idempotent)
    custom = custom or {}
    specs, unknown = [], []
    for name in dict.fromkeys(names):
        cfg = custom.get(name) or DEFAULT_CONFIGS.get(name)
        if cfg is None:
            unknown.append(name)
            continue
        cfg = deepcopy(cfg)
        specs.append(MetricSpec(name=name, metric_opts=dict(cfg['metric_opts']),
                                metric_mode=cfg.get('metric_mode', 'NR'),
                                lower_better=bool(cfg.get('lower_better', False)),
                                seed=cfg.get('seed'), probe=cfg.get('probe'), ranking=cfg.get('ranking')))
    if unknown:
        raise KeyError(f'Unknown metric(s) {unknown}: not in pyiqa.DEFAULT_CONFIGS nor in --metric_opt.')
    return specs


def build_metric(spec: MetricSpec, device: str | torch.device = 'cpu'):
    """A pyiqa ``InferenceModel`` for ``spec`` (registered in DEFAULT_CONFIGS under its name)."""
    import pyiqa
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    DEFAULT_CONFIGS[spec.name] = {'metric_opts': dict(spec.metric_opts), 'metric_mode': spec.metric_mode,
                                  'lower_better': spec.lower_better}
    state = torch.random.get_rng_state()
    if spec.seed is not None:
        torch.manual_seed(int(spec.seed))
    try:
        model = pyiqa.create_metric(spec.name, device=torch.device(device))
    finally:
        torch.random.set_rng_state(state)
    model.eval()
    return model


def is_probe(spec: MetricSpec, model) -> bool:
    """Whether the metric is evaluated as features + per-split ridge head."""
    if spec.probe is not None:
        if spec.probe and not hasattr(model.net, 'forward_features'):
            raise TypeError(f'{spec.name}: probe: true needs a network with forward_features()')
        return bool(spec.probe)
    return type(model.net).__name__ == 'CrossIQA' and getattr(model.net, 'head_type', None) == 'linear'
