"""Options YAML, read like pyiqa's (``pyiqa.utils.options.ordered_yaml``) and checked early."""
from __future__ import annotations

import os
from typing import Any

import numpy as np


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The trainers' options reader (pyiqa's ordered YAML, plain dicts, clear errors)."""
    from crossiqa_pyiqa.train.options import load_options

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
}


def regression_options(opt: dict[str, Any]) -> dict[str, Any]:
    reg = {**REGRESSION_DEFAULTS, **(opt.get('regression') or {})}
    unknown = set(reg) - set(REGRESSION_DEFAULTS)
    if unknown:
        raise ValueError(f'Unknown regression option(s) {sorted(unknown)}; valid: {sorted(REGRESSION_DEFAULTS)}')
    reg['alphas'] = alpha_grid(reg['alphas'])
    from crossiqa_pyiqa.regression.ranking_pairs import ranking_options

    reg['ranking'] = ranking_options(reg['ranking'])
    return reg
