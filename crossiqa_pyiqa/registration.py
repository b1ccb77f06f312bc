"""Adding the plugin's architectures and metrics to pyiqa's registries."""
from __future__ import annotations

from typing import Any

from pyiqa.default_model_configs import DEFAULT_CONFIGS

from crossiqa_pyiqa.archs.quality_map import MAP_PENALTY, MAP_PENALTY_BY_METRIC

def _entry(weights: str, head: str = 'linear', lower_better: bool = False, score_range: str = '~0, ~100') -> dict:
    return {'metric_opts': {'type': 'CrossIQA', 'weights': weights, 'head': head}, 'metric_mode': 'NR',
            'lower_better': lower_better, 'score_range': score_range}


#: ``crossiqa``'s output range: 25.4..115.5 over 400 crops of 64-1024 px (``scripts/measure_score_range.py``; the
#: crops above 100 are all under 256 px).
TONE_SCORE_RANGE = '~0, ~115'
#: ``crossiqa-noiseaware``'s: the same, less up to 29.3 points for noise (measured 25.4..115.5 on the same clean crops).
NOISEAWARE_SCORE_RANGE = '~-30, ~115'

#: Metric entries added to ``pyiqa.DEFAULT_CONFIGS`` (pyiqa's own format).
PLUGIN_METRICS: dict[str, dict[str, Any]] = {
    # Cross-IQA on a pretrained EfficientNet-Lite0 (DESIGN §2.4): the pretext with the camera and tone families
    # (docs/ABLATIONS.md, eleventh round), ridge head fitted on CLIVE + ranking pairs of 35 library types
    # (options/regress/crossiqa_tone_livec.yml). The head is linear, so it extrapolates past the MOS scale's
    # ends (scripts/measure_score_range.py). Not clamped (a loss keeps its gradient).
    'crossiqa': _entry('crossiqa_lite0_tone', score_range=TONE_SCORE_RANGE),
    'crossiqa-livec': _entry('crossiqa_lite0_tone', score_range=TONE_SCORE_RANGE),
    # the previous default (until December 2026): the first pretext (1000 steps of 16 pairs), 25-type pairs;
    # measured 13.9..116.7 over 200 crops of 64-1024 px; small crops (< 256 px) go above 100
    'crossiqa-v1': _entry('crossiqa_lite0_livec', score_range='~0, ~125'),
    # crossiqa's score less a penalty per unit of the `noise` diagnosis strength (no MOS: synthetic pairs), at the
    # cost the map charges for noise on this file (quality_map.MAP_PENALTY_BY_METRIC, scripts/fit_map_penalty.py):
    # real sensor noise ranked below its clean scene far more often, at a small CLIVE cost (README,
    # "crossiqa-noiseaware")
    'crossiqa-noiseaware': {**_entry('crossiqa_lite0_tone', score_range=NOISEAWARE_SCORE_RANGE),
                            'metric_opts': {**_entry('crossiqa_lite0_tone')['metric_opts'],
                                            'noise_penalty': MAP_PENALTY_BY_METRIC['crossiqa-lite0-tone']['noise']}},
    # the same on crossiqa-v1's file, at its map's cost of noise (quality_map.MAP_PENALTY['noise']); the
    # previous crossiqa-noiseaware (until December 6th, 2026)
    'crossiqa-noiseaware-v1': {**_entry('crossiqa_lite0_livec', score_range='~-40, ~125'),
                               'metric_opts': {**_entry('crossiqa_lite0_livec')['metric_opts'],
                                               'noise_penalty': MAP_PENALTY['noise']}},
    # its own file (README, "crossiqa-noiseaware-pretext"): the pretext trained with the level term (it reads a
    # view's noise level, no MOS), a head on stages >= 4 and q, and the score less 27.598 points per unit
    # (level / 5) of the pretext's noise reading above clean photos' median; threshold and penalty fitted without
    # MOS or real noise (scripts/fit_noise_penalty.py, stored in the file's metadata)
    'crossiqa-noiseaware-pretext': {**_entry('crossiqa_lite0_noiseaware', score_range='~-40, ~125'),
                                    'metric_opts': {**_entry('crossiqa_lite0_noiseaware')['metric_opts'],
                                                    'noise_penalty': 27.598, 'noise_source': 'level'}},
    # no MOS: a direction fitted on synthetic pristine-vs-degraded pairs (units: degradation levels), on
    # crossiqa-v1's encoder (README's numbers)
    'crossiqa-zs': _entry('crossiqa_lite0_livec', 'zeroshot', score_range='-inf, inf'),
    # the earlier model: a tiny ViT trained from scratch on 518 images (README, "crossiqa-tiny")
    'crossiqa-tiny': _entry('crossiqa_tiny_livec'),
    'crossiqa-tiny-zs': _entry('crossiqa_tiny_livec', 'zeroshot', lower_better=True, score_range='0, ~inf'),
}

_REGISTERED = False


def parse_score_range(text: str) -> tuple[float, float]:
    """``'~-10, ~130'`` → ``(-10.0, 130.0)`` (pyiqa's ``score_range`` strings; ``~`` marks a measured bound)."""
    lo, hi = (part.strip().lstrip('~') for part in text.split(','))
    return float(lo), float(hi)


def register_metric(name: str, metric_opts: dict[str, Any], lower_better: bool = False,
                    score_range: str = '~0, ~100', override: bool = True) -> None:
    """Add (or replace) one NR metric entry in pyiqa's ``DEFAULT_CONFIGS``."""
    if not override and name in DEFAULT_CONFIGS:
        raise KeyError(f'pyiqa already has a metric named {name!r}')
    if 'type' not in metric_opts:
        raise ValueError(f"metric_opts of {name!r} needs a 'type' (an ARCH_REGISTRY name)")
    DEFAULT_CONFIGS[name] = {'metric_opts': dict(metric_opts), 'metric_mode': 'NR',
                             'lower_better': lower_better, 'score_range': score_range}


def user_metric_opts(path: Any) -> dict[str, Any]:
    """Options of a user weight file's metric: a level head calibrated by ``scripts/fit_noise_penalty.py``
    brings its penalty (``info.level_head.noise_penalty``), so the metric scores as the calibration measured.
    An unreadable file is registered plain: ``create_metric`` then raises naming it."""
    from crossiqa_pyiqa.weights import read_metadata

    opts: dict[str, Any] = {'type': 'CrossIQA', 'pretrained_model_path': str(path), 'head': 'linear'}
    try:
        info = read_metadata(path, 'CrossIQA')[1]
    except (OSError, ValueError):
        return opts
    penalty = (info.get('level_head') or {}).get('noise_penalty')
    if isinstance(penalty, (int, float)) and penalty > 0:
        opts.update(noise_penalty=float(penalty), noise_source='level')
    return opts


def _register_user_weights() -> None:
    """Heads fitted by ``scripts/fit_regressor.py`` live in the user weights dir as ``<metric>.safetensors``."""
    from crossiqa_pyiqa.weights import user_weights_dir

    folder = user_weights_dir()
    if not folder.is_dir():
        return
    for path in sorted(folder.glob('*.safetensors')):
        name = path.stem
        if name.startswith('crossiqa-') and name not in PLUGIN_METRICS:
            register_metric(name, user_metric_opts(path))


def register() -> None:
    """Idempotent: import the architectures (their decorators fill ``ARCH_REGISTRY``) and add the metrics."""
    global _REGISTERED
    if _REGISTERED:
        return
    from crossiqa_pyiqa.archs import crossiqa_arch  # noqa: F401  (registers CrossIQA)
    from crossiqa_pyiqa.archs import grepq_arch  # registers GRepQ

    for name, cfg in {**PLUGIN_METRICS, **grepq_arch.GREPQ_METRICS, **grepq_arch.user_weight_metrics()}.items():
        DEFAULT_CONFIGS[name] = {**cfg, 'metric_opts': dict(cfg['metric_opts'])}
    _register_user_weights()
    _REGISTERED = True
