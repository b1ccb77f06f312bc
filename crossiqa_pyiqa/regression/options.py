"""Options of ``scripts/fit_regressor.py``: the ``regression`` section's defaults and the file's schema."""
from __future__ import annotations

import os
from typing import Any

import numpy as np


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The plugin's options reader (safe YAML 1.2, plain dicts, clear errors)."""
    from crossiqa_pyiqa.optionfile import load_options

    return load_options(str(path))


def alpha_grid(spec: Any) -> list[float]:
    """``[a, b, ...]`` or ``{logspace: [lo, hi, n]}`` (powers of ten)."""
    if spec is None:
        from crossiqa_pyiqa.regression.ridge import DEFAULT_ALPHAS

        return list(DEFAULT_ALPHAS)
    if isinstance(spec, dict) and 'logspace' in spec:
        lo, hi, n = spec['logspace']
        return [float(a) for a in np.logspace(float(lo), float(hi), int(n))]
    alphas = [float(a) for a in spec]
    if not alphas or min(alphas) <= 0:
        raise ValueError(f'alphas must be a non-empty list of positive numbers, got {spec!r}')
    return alphas


#: Defaults of the ``regression`` section.
REGRESSION_DEFAULTS: dict[str, Any] = {
    'alphas': None,  # default grid: ridge.DEFAULT_ALPHAS
    'cv_folds': 5,
    'cv_scoring': 'mse',
    'n_splits': 10,
    'train_ratio': 0.8,
    'seed': 123,
    'pristine_ridge': 1e-3,
    'ranking': None,  # synthetic ranking pairs in the fit (ranking_pairs.RANKING_DEFAULTS)
    # ridge-penalty factor per feature group ({label of CrossIQA.feature_groups(): factor}, default 1 each):
    # a few global statistics need not be shrunk like thousands of correlated stage channels
    'group_penalty': None,
}


def regression_options(opt: dict[str, Any]) -> dict[str, Any]:
    reg = {**REGRESSION_DEFAULTS, **(opt.get('regression') or {})}
    unknown = set(reg) - set(REGRESSION_DEFAULTS)
    if unknown:
        raise ValueError(f'Unknown regression option(s) {sorted(unknown)}; valid: {sorted(REGRESSION_DEFAULTS)}')
    reg['alphas'] = alpha_grid(reg['alphas'])
    from crossiqa_pyiqa.regression.ranking_pairs import ranking_options

    reg['ranking'] = ranking_options(reg['ranking'])
    reg['group_penalty'] = group_penalty_options(reg['group_penalty'])
    return reg


def group_penalty_options(spec: Any) -> dict[str, float] | None:
    """``{group label: positive factor}`` or None; a bad value is refused by name."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f'regression.group_penalty must map feature group labels to factors, got {spec!r}')
    out = {}
    for label, factor in spec.items():
        try:
            value = float(factor)
        except (TypeError, ValueError):
            value = float('nan')
        if isinstance(factor, bool) or not np.isfinite(value) or value <= 0:
            raise ValueError(f'regression.group_penalty[{label!r}] must be a positive finite number, got {factor!r}')
        out[str(label)] = value
    return out


def regress_schema() -> dict[str, Any]:
    """Options of ``scripts/fit_regressor.py``."""
    from crossiqa_pyiqa.optionfile import ANY, DATASET_KEYS, Keys, MapOf
    from crossiqa_pyiqa.regression.ranking_pairs import RANKING_DEFAULTS
    from crossiqa_pyiqa.train.options import network_keys

    regression: dict[str, Any] = {k: ANY for k in REGRESSION_DEFAULTS}
    regression['ranking'] = {k: ANY for k in RANKING_DEFAULTS}
    return {
        'name': ANY,
        'dataset': DATASET_KEYS,
        'datasets': MapOf(DATASET_KEYS),
        'encoder': {'pretrained_model_path': ANY, 'random_seed': ANY, 'options': Keys(network_keys(), 'network options')},
        'regression': regression,
        'cache_dir': ANY,
    }


def validate_regress(opt: dict[str, Any], source: str | None = None) -> None:
    """Unknown or missing keys of a regress options mapping raise ``OptionsError`` naming them."""
    from crossiqa_pyiqa.optionfile import validate_schema

    validate_schema(opt, regress_schema(), source)
