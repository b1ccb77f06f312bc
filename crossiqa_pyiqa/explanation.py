"""``crossiqa_pyiqa.explain``: why a photo scores low (which family of problem, how strong) and where.

One number per photo does not say what to fix. :func:`explain` returns, for one image read
exactly as the metrics read it (``inputs.read_image`` for paths, PIL images and bytes; the
network's own checks for tensors):

- ``score``: the metric's score (the same number as ``pyiqa.create_metric(metric)(image)``);
- ``families``: a strength in [0, 1] per family (:data:`FAMILIES`: blur, noise, compression,
  exposure, contrast, colour) from the weight file's diagnosis heads (``archs/diagnosis.py``),
  fitted on library degradations only (``scripts/fit_diagnosis.py``); 1 ≈ the library's
  level 5, 0.2 ≈ level 1. ``exposure`` is the larger of the dark and bright heads and
  ``exposure_direction`` says which ('dark' / 'bright'; None below :data:`DIRECTION_THRESHOLD`);
  likewise ``directions['contrast']`` ('low' / 'high') and ``directions['colour']`` ('faded',
  'vivid' or 'cast');
- ``quality_map``: local quality, one value per ``map_cell`` px cell (32 px for
  EfficientNet-Lite), each :data:`MAP_HEAD_WEIGHT` x the score head on the encoder's features over
  a window of ``map_window`` px around the cell less the window's diagnosed problems (the weight
  file's window diagnosis heads on the same window, times :data:`MAP_PENALTY`: what a unit of each
  family's strength costs the score on whole photos; ``archs/quality_map.py``), shifted so that the
  map's mean is the score: values below the score mark the worse parts of the photo, in the
  score's units.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from crossiqa_pyiqa.archs.quality_map import MAP_PENALTY, MAP_PENALTY_BY_METRIC, map_penalty_for  # noqa: F401
from crossiqa_pyiqa.degradations.families import FAMILIES, family_strengths

#: ``top_family`` and the directions are None below this strength (about level 1; pristine photos stay under it).
DIRECTION_THRESHOLD = 0.25
#: Default side of the map's window, in cells of the quality stage (3 cells: 96 px on EfficientNet-Lite).
DEFAULT_WINDOW = 3
#: The score head's weight in the map when the weight file has window heads (``diagnosis_map``): each window reads
#: ``MAP_HEAD_WEIGHT`` x the score head less the penalty. The head's local values move with content by ±10-20
#: points, more than a darkened or faded half costs; at a tenth it still orders windows the diagnosis heads read
#: alike. Chosen on half-degraded BSDS500 / McMaster photos (docs/EXPLAIN.md, "The quality map"). Files without
#: window heads keep the earlier map (weight 1, crop heads).
MAP_HEAD_WEIGHT = 0.1


@dataclass
class Explanation:
    """What :func:`explain` found in one image."""

    metric: str
    score: float
    families: dict[str, float]  # FAMILIES order, each in [0, 1]
    exposure_direction: Optional[str]  # 'dark' | 'bright' | None
    directions: dict[str, Optional[str]]  # exposure, contrast, colour: the strongest head's direction (or None)
    outputs: dict[str, float]  # every head's output in [0, 1] (exposure_dark, exposure_bright, ...)
    image_size: tuple[int, int]  # (height, width) read
    quality_map: Optional[np.ndarray] = None  # (rows, cols), score units, mean = score
    map_cell: Optional[int] = None  # pixels per map cell
    map_window: Optional[int] = None  # pixels per window side
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def top_family(self) -> Optional[str]:
        """The strongest family, or None if none reaches :data:`DIRECTION_THRESHOLD`."""
        name = max(self.families, key=self.families.get)
        return name if self.families[name] >= DIRECTION_THRESHOLD else None

    def row(self) -> dict[str, Any]:
        """The family columns of a CSV row (``crossiqa-pyiqa score --explain``)."""
        out: dict[str, Any] = {name: round(self.families[name], 4) for name in FAMILIES}
        out['exposure_direction'] = self.exposure_direction or ''
        out['contrast_direction'] = self.directions.get('contrast') or ''
        out['colour_kind'] = self.directions.get('colour') or ''
        out['top_family'] = self.top_family or ''
        return out


#: Columns :meth:`Explanation.row` adds to a CSV.
ROW_COLUMNS: tuple[str, ...] = (*FAMILIES, 'exposure_direction', 'contrast_direction', 'colour_kind', 'top_family')


@functools.lru_cache(maxsize=4)
def _built(name: str, device: str):
    import pyiqa

    from crossiqa_pyiqa.registration import register

    register()  # the plugin's metrics in pyiqa's table
    return pyiqa.create_metric(name, device=device)


def resolve_network(metric: Any = 'crossiqa', device: Any = None):
    """``(CrossIQA network, metric name)`` for a metric name, a pyiqa metric or a CrossIQA network."""
    from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA

    name = metric if isinstance(metric, str) else None
    if isinstance(metric, str):
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        metric = _built(metric, str(torch.device(device)))
    net = getattr(metric, 'net', metric)
    if not isinstance(net, CrossIQA):
        raise ValueError(f'explain works with the plugin\'s CrossIQA metrics (crossiqa, crossiqa-livec, crossiqa-zs, '
                         f'or a fitted crossiqa-<name>); {name or type(net).__name__} is not one')
    return net, name or getattr(metric, 'metric_name', None) or getattr(net, 'info', {}).get('metric_name', 'crossiqa')


def _one_image(net, image: Any) -> torch.Tensor:
    from crossiqa_pyiqa.inputs import read_image

    x = image if torch.is_tensor(image) else read_image(image)[None]
    if torch.is_tensor(x) and x.dim() == 3:
        x = x[None]
    if torch.is_tensor(x) and x.dim() == 4 and x.shape[0] > 1:
        raise ValueError(f'explain takes one image, got a batch of {x.shape[0]}: '
                         'call it per image, explain(x[i:i + 1])')
    return net.prepare_input(x)


def explain(image: Any, metric: Any = 'crossiqa', device: Any = None, quality_map: bool = True,
            window: int = DEFAULT_WINDOW, map_penalty: Optional[dict] = None) -> Explanation:
    """Score, family strengths and (``quality_map=True``) the local quality map of one image.

    ``image``: a path, bytes, a PIL image, or a (1, 3, H, W) / (3, H, W) tensor in [0, 1].
    ``metric``: a CrossIQA metric name (built once and cached), a pyiqa metric or a CrossIQA
    network. ``window``: the map's window side in cells (odd). ``map_penalty``: the map's penalty per
    family (None: the file's, :func:`map_penalty_for`; ``{}``: the score head alone, at weight 1). Raises
    ``RuntimeError`` naming the fit command when the metric's weight file holds no diagnosis heads.
    """
    from crossiqa_pyiqa.archs.quality_map import encode_maps
    from crossiqa_pyiqa.archs.quality_map import quality_map as local_map

    net, name = resolve_network(metric, device)
    heads = net.require_diagnosis()
    device = net.feat_mean.device
    with torch.inference_mode():
        x = _one_image(net, image).to(device)
        h, w = x.shape[-2:]
        whole = h * w <= net.config['max_pixels'] and tuple(net.config['feature_scales']) == (1.0,)
        encoded = None
        if quality_map:
            if not net.is_cnn or tuple(net.config['feature_scales']) != (1.0,):
                raise ValueError(f'the quality map is defined for CNN encoders read at scale 1 only; {name} has '
                                 f"backbone {net.config['backbone']!r}, feature_scales {net.config['feature_scales']}")
            encoded = encode_maps(net, x)
        # read whole, the map's encoder pass gives exactly forward_features' features
        features = encoded['features'] if encoded is not None and whole else net.forward_features(x)
        score = float(net.score_features(features).reshape(-1)[0])
        strengths = net.diagnose(features)[0].tolist()
        penalty = map_penalty_for(net) if map_penalty is None else dict(map_penalty)
        window_heads = getattr(net, 'diagnosis_map', None) is not None
        head_weight = MAP_HEAD_WEIGHT if penalty and window_heads else 1.0
        the_map = (local_map(net, encoded, window, penalty=penalty, head_weight=head_weight).cpu().numpy()[0]
                   if encoded is not None else None)
    outputs = dict(zip(heads.outputs, strengths))
    families, directions = family_strengths(outputs)
    directions = {f: (d if families[f] >= DIRECTION_THRESHOLD else None) for f, d in directions.items()}
    cell = None
    if encoded is not None:
        from crossiqa_pyiqa.archs.backbones import BACKBONE_CONFIGS

        cell = BACKBONE_CONFIGS[net.config['backbone']]['strides'][net.encoder.quality_stage]
    return Explanation(metric=name, score=score, families=families, exposure_direction=directions['exposure'],
                       directions=directions,
                       outputs=outputs, image_size=(int(h), int(w)), quality_map=the_map, map_cell=cell,
                       map_window=None if cell is None else cell * window,
                       info={'window_cells': window, 'map_penalty': penalty, 'map_head_weight': head_weight,
                             'map_heads': ('window' if window_heads else 'crop') if penalty else None,
                             'diagnosis': (net.info.get('diagnosis') or {}).get('date')})
