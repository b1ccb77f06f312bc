"""Diagnosis heads: what is wrong with a photo, as a strength in [0, 1] per family of degradation.

Linear (ridge) maps from the encoder's standardised features (the ones the score head reads)
to one strength per output of :data:`crossiqa_pyiqa.degradations.families.HEAD_OUTPUTS`,
fitted on synthetic crops from the degradation library only, no MOS
(``scripts/fit_diagnosis.py`` → ``regression/diagnosis.py``). They live in the weight file as
``diagnosis.*`` tensors, their output names and provenance under the metadata's
``diagnosis`` entry, so a file without them loads exactly as before and scores the same.
Like the score head they stay float32 under ``half()`` (rounded heads give wrong readings).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from crossiqa_pyiqa.archs.precision import apply_keeping_float32

#: State-dict prefix of the heads inside a CrossIQA weight file.
DIAGNOSIS_PREFIX = 'diagnosis.'
#: State-dict prefix of the quality map's heads: the same outputs, fitted on *window* features (``diagnosis_map``
#: in the metadata). Heads fitted on whole crops read a 96-px window's exposure and colour weakly (a window's
#: statistics differ from a crop's), so the map has its own, fitted on windows of the same synthetic crops.
MAP_DIAGNOSIS_PREFIX = 'diagnosis_map.'
#: The command that fits them (named by every error about missing heads).
FIT_COMMAND = ('python scripts/fit_diagnosis.py -opt options/regress/crossiqa_diagnosis.yml --weights {file} '
               '--out {file}')


class DiagnosisHeads(nn.Module):
    """``clip(((features - mean) / std) @ coef.T + intercept, 0, 1)``, one column per output name."""

    BUFFERS = ('mean', 'std', 'coef', 'intercept')

    def __init__(self, feature_dim: int, outputs: Sequence[str]) -> None:
        super().__init__()
        self.outputs = tuple(str(o) for o in outputs)
        if not self.outputs or len(set(self.outputs)) != len(self.outputs):
            raise ValueError(f'diagnosis heads need distinct output names, got {list(outputs)}')
        k = len(self.outputs)
        self.register_buffer('mean', torch.zeros(feature_dim))
        self.register_buffer('std', torch.ones(feature_dim))
        self.register_buffer('coef', torch.zeros(k, feature_dim))
        self.register_buffer('intercept', torch.zeros(k))

    def _apply(self, fn, recurse=True):  # half(): the heads stay float32
        return apply_keeping_float32(self, super()._apply, fn, recurse, self.BUFFERS, ())

    def set_fitted(self, mean: Any, std: Any, coef: Any, intercept: Any) -> None:
        """Copy a fitted model's arrays (numpy or torch) in, float32."""
        for name, value in (('mean', mean), ('std', std), ('coef', coef), ('intercept', intercept)):
            t = torch.as_tensor(value, dtype=torch.float32)
            own = getattr(self, name)
            if t.shape != own.shape:
                raise ValueError(f'diagnosis.{name}: fitted shape {tuple(t.shape)}, heads expect {tuple(own.shape)}')
            own.copy_(t)

    def raw(self, features: torch.Tensor) -> torch.Tensor:
        """Unclipped outputs (B, K) in float32 (the fit's units: level / 5)."""
        f = features.float()
        return ((f - self.mean) / self.std) @ self.coef.T + self.intercept

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Strengths (B, K) in [0, 1]."""
        return self.raw(features).clamp(0.0, 1.0)


def heads_from_state(state_dict: Mapping[str, torch.Tensor], info: Mapping[str, Any], feature_dim: int,
                     path: str, prefix: str = DIAGNOSIS_PREFIX) -> DiagnosisHeads | None:
    """Empty heads shaped like a file's ``diagnosis.*`` (or ``prefix``) tensors (filled by the strict load), or None
    without them. Their output names are the metadata entry named like the prefix (``diagnosis``, ``diagnosis_map``)."""
    keys = {k for k in state_dict if k.startswith(prefix)}
    if not keys:
        return None
    from crossiqa_pyiqa.weights import WeightFileError

    entry = prefix.rstrip('.')
    outputs = (info.get(entry) or {}).get('outputs')
    coef = state_dict.get(prefix + 'coef')
    if not outputs or coef is None or coef.dim() != 2 or coef.shape[0] != len(outputs):
        fit = FIT_COMMAND.format(file=path) + (' --map' if prefix == MAP_DIAGNOSIS_PREFIX else '')
        raise WeightFileError(f'Weight file {path} holds {entry} tensors {sorted(keys)} but no matching output names '
                              f"in its metadata ('{entry}': {{'outputs': [...]}}); refit them with " + fit)
    return DiagnosisHeads(feature_dim, outputs)
