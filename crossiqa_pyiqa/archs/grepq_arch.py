r"""GRepQ: generalisable perceptual representations for data-efficient NR-IQA.

Srinath et al., "Learning Generalizable Perceptual Representations for Data-Efficient
No-Reference Image Quality Assessment", WACV 2024 (public code: suhas-srinath/GRepQ, MIT).
What is built here follows DESIGN §3:

- Low-level encoder: ResNet-18 (no ImageNet weights) without classifier, 512-d, and an
  MLP 512→512→ReLU→128, trained from pristine images alone with the quality-aware
  contrastive loss (``crossiqa_pyiqa.train.grepq_task``, task ``grepq_lowlevel``).
  Input is [0, 1] RGB without normalisation, as in the release.
- High-level encoder: CLIP RN50's image tower (``crossiqa_pyiqa.grepq.clip_tower``),
  optionally fine-tuned with the group contrastive loss (task ``grepq_highlevel``).
- Zero-shot: Q_L = 1 − σ(D/100), D the NIQE-style distance between the 128-d features
  of the image's 96×96 patches and a pristine patch bank (``crossiqa_pyiqa.grepq.pristine``);
  Q_H = σ(10·(cos_good − cos_bad)); GRepQ_Z = Q_L + Q_H. Higher is better.
- Data-efficient: ``forward_features`` gives [CLIP (1024) ‖ low-level (128)] of the
  whole image (or the 128-d low-level part alone); ``scripts/fit_regressor.py`` fits the
  ridge head into ``feat_mean``/``feat_std``/``head`` exactly as for CrossIQA.

Weights: one file holds the low-level encoder, the pristine statistics and, for the
high-level metrics, the CLIP tower and the prompt embeddings. The packaged file
(``weights/grepq_ll.safetensors``) has the low-level part only; the CLIP tower is then
read from ``clip_model_path`` or ``~/.cache/clip/RN50.pt``, downloaded there from
``clip_url`` (OpenAI's RN50 by default, SHA-256 verified) the first time, unless offline.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18

from pyiqa.utils.registry import ARCH_REGISTRY

from crossiqa_pyiqa.archs.precision import apply_keeping_float32, full_precision, module_dtype
from crossiqa_pyiqa.grepq.pristine import niqe_distance, unfold_patches
from crossiqa_pyiqa.weights import PACKAGE_WEIGHTS_DIR, WeightFileError, load_state_strict, read_named_or_path

#: Metric entries for ``pyiqa.DEFAULT_CONFIGS`` (same format as ``registration.PLUGIN_METRICS``).
#: Dataset-fitted heads (``grepq-ll-<dataset>``, ``grepq-<dataset>``) are files written by
#: ``scripts/fit_regressor.py``; :func:`user_weight_metrics` turns them into entries.
GREPQ_METRICS: dict[str, dict[str, Any]] = {
    'grepq-ll-zs': {
        'metric_opts': {'type': 'GRepQ', 'weights': 'grepq_ll', 'head': 'zeroshot'},
        'metric_mode': 'NR',
        'lower_better': False,
        'score_range': '0, 0.5',
    },
    'grepq-zs': {
        'metric_opts': {'type': 'GRepQ', 'weights': 'grepq_ll', 'head': 'zeroshot', 'use_clip': True},
        'metric_mode': 'NR',
        'lower_better': False,
        'score_range': '0, 1.5',
    },
}

DEFAULT_CONFIG: dict[str, Any] = dict(
    embed_dim=128,  # low-level feature size (MLP output)
    hidden_dim=512,  # MLP hidden size
    use_clip=False,  # add the CLIP RN50 image tower (high-level path)
    clip_pos_embed='interpolate',  # attention-pool position embedding at other sizes: 'interpolate' | 'none'
    prompts=('a good photo.', 'a bad photo.'),
    clip_scale=10.0,  # Q_H = σ(clip_scale · (cos_good − cos_bad))
    patch_size=96,  # zero-shot patches (and pristine bank patches)
    patch_stride=48,
    patch_batch=64,  # patches encoded at once: bounds memory on large images
    distance_scale=100.0,  # Q_L = 1 − σ(D / distance_scale)
    cov_ridge=1e-3,  # ridge on the averaged covariance of the distance
)
#: Options that may differ from those a weight file was written with.
INFERENCE_KEYS = frozenset({'use_clip', 'clip_pos_embed', 'clip_scale', 'patch_stride', 'patch_batch',
                            'distance_scale', 'cov_ridge'})
CLIP_DIM = 1024
#: Entries filled from elsewhere than a file whose CLIP part differs from the model's (or unused then).
_CLIP_OR_HEAD = ('clip_visual.', 'text_features', 'head.', 'feat_mean', 'feat_std')
#: Kept in float32 when a file is written in half precision (statistics and the head).
_KEEP_FULL_PRECISION = ('pristine_mean', 'pristine_cov', 'feat_mean', 'feat_std', 'text_features', 'head.')


def default_weight_path(weights: str) -> str:
    return str(PACKAGE_WEIGHTS_DIR / f'{weights}.safetensors')


def _normalise_config(config: dict[str, Any]) -> dict[str, Any]:
    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise TypeError(f'Unknown GRepQ option(s) {sorted(unknown)}; valid: {sorted(DEFAULT_CONFIG)}')
    out = {**DEFAULT_CONFIG, **config}
    out['prompts'] = tuple(out['prompts'])
    out['use_clip'] = bool(out['use_clip'])
    if len(out['prompts']) != 2:
        raise ValueError(f"prompts must be (good, bad), got {out['prompts']}")
    if out['clip_pos_embed'] not in ('interpolate', 'none'):
        raise ValueError(f"clip_pos_embed must be 'interpolate' or 'none', got {out['clip_pos_embed']!r}")
    if out['patch_stride'] < 1 or out['patch_size'] < 32:
        raise ValueError('patch_size must be >= 32 and patch_stride >= 1')
    return out


def user_weight_metrics() -> dict[str, dict[str, Any]]:
    """Entries for fitted GRepQ heads in the user weights dir (``grepq-*.safetensors`` written by fit_regressor)."""
    from crossiqa_pyiqa.weights import user_weights_dir

    folder = user_weights_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: {'metric_opts': {'type': 'GRepQ', 'pretrained_model_path': str(p), 'head': 'linear'},
                     'metric_mode': 'NR', 'lower_better': False, 'score_range': '~0, ~100'}
            for p in sorted(folder.glob('grepq-*.safetensors')) if p.stem not in GREPQ_METRICS}


class LowLevelEncoder(nn.Module):
    """ResNet-18 trunk (global average pooled, 512-d) + MLP 512→512→ReLU→128. Any input size ≥ 32 px."""

    def __init__(self, hidden_dim: int = 512, embed_dim: int = 128) -> None:
        super().__init__()
        backbone = resnet18(weights=None)
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.mlp = nn.Sequential(nn.Linear(512, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.backbone(x))


@ARCH_REGISTRY.register()
class GRepQ(nn.Module):
    """GRepQ network: low-level (and optional CLIP) features, zero-shot or ridge head.

    Args:
        pretrained: load ``pretrained_model_path`` (or the packaged ``weights`` file).
            ``False`` builds a randomly initialised low-level encoder (training, tests);
            with ``use_clip`` the CLIP tower is then random too unless ``clip_model_path`` is given.
        pretrained_model_path: a weight file written by :meth:`save_pretrained`.
        weights: name of a weight file shipped in the package (used when no path is given).
        head: ``'zeroshot'`` (Q_L, plus Q_H with ``use_clip``; higher is better) or
            ``'linear'`` (ridge head fitted by ``scripts/fit_regressor.py``, MOS scale).
        clip_model_path: OpenAI CLIP RN50 checkpoint, used when ``use_clip`` is on and the
            weight file holds no CLIP tower (default ``~/.cache/clip/RN50.pt``); downloaded
            there when missing, unless ``HF_HUB_OFFLINE=1`` or ``CROSSIQA_OFFLINE=1``.
        clip_url: where a missing CLIP file is downloaded from (default OpenAI's RN50 URL);
            a mirror keeps openai-clip's layout ``.../<sha256>/RN50.pt``, the hash that is checked.
        freeze_batchnorm: keep every batch-norm layer in eval mode under ``.train()`` (default), so
            a metric inside a model put into training (a loss) keeps its scores; the training
            tasks pass ``False`` to learn the statistics.
        **config: options of ``DEFAULT_CONFIG``; a weight file's config is the base, and only
            ``INFERENCE_KEYS`` may differ from it.
    """

    ARCH_NAME = 'GRepQ'
    INFERENCE_KEYS = INFERENCE_KEYS
    #: pyiqa's ``check_input_range``: set per metric (False for ``as_loss=True``) by ``inputs.attach_to_inference_model``.
    check_input_range = True
    #: Stay float32 under ``half()`` / ``bfloat16()`` (with the head): see ``archs.precision``.
    FLOAT32_BUFFERS = ('feat_mean', 'feat_std', 'pristine_mean', 'pristine_cov', 'text_features')

    def __init__(self, pretrained: bool = True, pretrained_model_path: str | None = None,
                 weights: str = 'grepq_ll', head: str = 'zeroshot', clip_model_path: str | None = None,
                 clip_url: str | None = None, freeze_batchnorm: bool = True, **config: Any) -> None:
        super().__init__()
        self.freeze_batchnorm = bool(freeze_batchnorm)
        if head not in ('zeroshot', 'linear'):
            raise ValueError(f"head must be 'zeroshot' or 'linear', got {head!r}")
        self.head_type = head
        from crossiqa_pyiqa.inputs import attach_to_inference_model

        attach_to_inference_model(self)  # pyiqa.create_metric(...)(path) reads with the plugin's reader
        state_dict, file_config, self.info, path = None, {}, {}, None
        if pretrained:
            from crossiqa_pyiqa.weights import check_statistics_precision, head_is_fitted

            state_dict, file_config, self.info, path = read_named_or_path(
                pretrained_model_path, default_weight_path(weights), self.ARCH_NAME,
                f'No GRepQ weights named {weights!r} are installed (train them with scripts/pretrain_crossiqa.py '
                '-opt options/pretrain/grepq_ll_cpu.yml and scripts/grepq_pristine_stats.py)')
            check_statistics_precision(state_dict, path)
            # a fitted head reads the CLIP features as the file computed them
            head_bound = ({'clip_pos_embed'} if head_is_fitted(state_dict, self.info)
                          and bool(config.get('use_clip', file_config.get('use_clip'))) == bool(file_config.get('use_clip'))
                          else set())
            clashing = sorted(k for k in config if (k not in INFERENCE_KEYS or k in head_bound) and k in file_config
                              and _normalise_config({k: config[k]})[k] != _normalise_config({k: file_config[k]})[k])
            if clashing:
                raise ValueError(f'Weight file {path} was written with '
                                 + ', '.join(f'{k}={file_config[k]!r}' for k in clashing) + '; the options ask for '
                                 + ', '.join(f'{k}={config[k]!r}' for k in clashing) + '.')
        self.config = _normalise_config({**file_config, **config})
        c = self.config
        self.ll = LowLevelEncoder(c['hidden_dim'], c['embed_dim'])
        self.clip_visual = None
        if c['use_clip']:
            from crossiqa_pyiqa.grepq.clip_tower import build_image_tower

            self.clip_visual = build_image_tower(c['clip_pos_embed'])
            self.register_buffer('text_features', torch.zeros(2, CLIP_DIM))
        self.feature_dim = c['embed_dim'] + (CLIP_DIM if c['use_clip'] else 0)
        # Ridge head on standardised features, fitted by scripts/fit_regressor.py (names as in CrossIQA).
        self.register_buffer('feat_mean', torch.zeros(self.feature_dim))
        self.register_buffer('feat_std', torch.ones(self.feature_dim))
        self.head = nn.Linear(self.feature_dim, 1)
        # Zero-shot: Gaussian of the pristine patch bank's low-level features (scripts/grepq_pristine_stats.py).
        self.register_buffer('pristine_mean', torch.zeros(c['embed_dim']))
        self.register_buffer('pristine_cov', torch.eye(c['embed_dim']))

        file_has_clip = bool(file_config.get('use_clip', False))
        if (c['use_clip'] and not (state_dict is not None and file_has_clip)
                and (pretrained or clip_model_path or clip_url)):
            self._load_clip(clip_model_path, clip_url)
        if state_dict is not None:
            if file_has_clip == c['use_clip']:
                load_state_strict(self, state_dict, path)
            else:
                self._load_without_clip_or_head(state_dict, path)
            if head == 'zeroshot' and not self.info.get('has_pristine_stats', False):
                raise ValueError(f'Weight file {path} holds no pristine statistics; the zero-shot head needs a file '
                                 'written by scripts/grepq_pristine_stats.py.')
        self.eval()

    def train(self, mode: bool = True) -> 'GRepQ':
        """``freeze_batchnorm`` (default): batch norm stays in eval mode, so ``train()`` never moves scores."""
        super().train(mode)
        if self.freeze_batchnorm:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def _apply(self, fn, recurse=True):  # half(): network weights in half, head and statistics float32
        return apply_keeping_float32(self, super()._apply, fn, recurse, self.FLOAT32_BUFFERS, ('head',))

    # ----------------------------------------------------------------- loading
    def _load_clip(self, clip_model_path: str | None, clip_url: str | None = None) -> None:
        from crossiqa_pyiqa.grepq.clip_tower import load_clip_rn50

        visual, text = load_clip_rn50(clip_model_path, self.config['prompts'], clip_url)
        self.clip_visual.load_state_dict(visual, strict=True)
        with torch.no_grad():
            self.text_features.copy_(text)
        self.info = {**self.info, 'clip_model_path': str(clip_model_path or 'default cache')}

    def _load_without_clip_or_head(self, state_dict: dict[str, torch.Tensor], path: str) -> None:
        """A file whose CLIP part differs from the model's: load everything else (its head cannot apply)."""
        own = self.state_dict()
        given = {k: v for k, v in state_dict.items() if not k.startswith(_CLIP_OR_HEAD)}
        missing = sorted(k for k in own if not k.startswith(_CLIP_OR_HEAD) and k not in given)
        if missing:
            raise WeightFileError(f'Weight file {path} lacks GRepQ low-level entries {missing[:8]}.')
        load_state_strict(self, {**own, **given}, path)

    def save_pretrained(self, path: str, info: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> str:
        """Write the network with its config and provenance; ``dtype`` (e.g. float16) stores weight
        matrices in half precision (statistics, head and 1-d tensors stay float32). Loading casts back."""
        from crossiqa_pyiqa.weights import save_weights

        state = self.state_dict()
        if dtype is not None:
            state = {k: (v.to(dtype) if v.is_floating_point() and v.dim() >= 2
                         and not k.startswith(_KEEP_FULL_PRECISION) else v) for k, v in state.items()}
            bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
            if bad:
                raise ValueError(f'{dtype} cannot hold {bad[:4]} (overflow); save in float32.')
        info = {**self.info, **(info or {}), 'storage_dtype': str(dtype or torch.float32).replace('torch.', '')}
        return str(save_weights(path, state, self.ARCH_NAME, self.config, info))

    # ---------------------------------------------------------------- features
    #: Smallest image side for features and the linear head (ResNet-18's 32x downsampling).
    MIN_FEATURE_SIZE = 32

    @property
    def min_input_size(self) -> int:
        """Smallest image side scored: one zero-shot patch (96 px) for the zero-shot head, else 32 px."""
        return self.config['patch_size'] if self.head_type == 'zeroshot' else self.MIN_FEATURE_SIZE

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """The checked (B, 3, H, W) batch in the network's dtype (see ``crossiqa_pyiqa.inputs.check_image_batch``)."""
        from crossiqa_pyiqa.inputs import check_image_batch

        x = check_image_batch(x, 'GRepQ' + (' (zero-shot)' if self.head_type == 'zeroshot' else ''),
                              self.min_input_size, channels=(1, 3), check_range=self.check_input_range,
                              dtype=module_dtype(self.ll))
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        from crossiqa_pyiqa.inputs import check_image_batch

        x = check_image_batch(x, 'GRepQ', self.MIN_FEATURE_SIZE, channels=(1, 3), check_range=self.check_input_range,
                              dtype=module_dtype(self.ll))
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def low_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """128-d low-level features of whole images (any size), (B, embed_dim)."""
        return self.ll(x)

    def high_level_features(self, x: torch.Tensor) -> torch.Tensor:
        """1024-d CLIP image features of whole images at their own size, (B, 1024)."""
        if self.clip_visual is None:
            raise RuntimeError('This GRepQ network has no CLIP tower (build it with use_clip=True).')
        from crossiqa_pyiqa.grepq.clip_tower import normalise_for_clip

        return self.clip_visual(normalise_for_clip(x.to(module_dtype(self.clip_visual)))).float()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The exact features the ridge head consumes: [CLIP ‖ low-level] (B, 1152), or low-level (B, 128)."""
        x = self._prepare(x)
        low = self.low_level_features(x).float()
        if self.clip_visual is None:
            return low
        return torch.cat([self.high_level_features(x), low], dim=-1)

    # ---------------------------------------------------------------- zero-shot
    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Low-level features of the 96×96 patches at stride 48: (B, N, embed_dim)."""
        c = self.config
        patches = unfold_patches(x, c['patch_size'], c['patch_stride'])
        b, n = patches.shape[:2]
        flat = patches.flatten(0, 1)
        feats = torch.cat([self.ll(flat[i:i + c['patch_batch']]) for i in range(0, flat.shape[0], c['patch_batch'])])
        return feats.reshape(b, n, -1)

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """NIQE-style distance D of each image to the pristine statistics, (B,) float64."""
        feats = self.patch_features(x)
        with full_precision(feats.device):  # statistics in float64, also under autocast
            return niqe_distance(feats, self.pristine_mean, self.pristine_cov, self.config['cov_ridge'])

    def zeroshot_low(self, x: torch.Tensor) -> torch.Tensor:
        """Q_L = 1 − σ(D / 100), in (0, 0.5], (B,) float32."""
        return (1.0 - torch.sigmoid(self.distance(x) / self.config['distance_scale'])).float()

    def zeroshot_high(self, x: torch.Tensor) -> torch.Tensor:
        """Q_H = σ(10 · (cos_good − cos_bad)), in (0, 1), (B,)."""
        from crossiqa_pyiqa.grepq.clip_tower import clip_quality

        feats = self.high_level_features(x)
        with full_precision(feats.device):
            return clip_quality(feats, self.text_features, self.config['clip_scale']).float()

    # ------------------------------------------------------------------ scoring
    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.feat_mean) / self.feat_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quality score per image, (B, 1); higher is better for both heads."""
        x = self._prepare(x)
        if self.head_type == 'zeroshot':
            if min(x.shape[-2:]) < self.config['patch_size']:
                raise ValueError(f'Image of size {x.shape[-2]}x{x.shape[-1]} is smaller than one '
                                 f'{self.config["patch_size"]}x{self.config["patch_size"]} patch; GRepQ\'s '
                                 'zero-shot score needs at least that.')
            q = self.zeroshot_low(x)
            if self.clip_visual is not None:
                q = q + self.zeroshot_high(x)
            return q[:, None]
        if bool((self.feat_mean == 0).all()) and bool((self.feat_std == 1).all()):
            raise RuntimeError('This GRepQ network has no fitted linear head; fit one with scripts/fit_regressor.py '
                               "(or use head='zeroshot').")
        features = self.forward_features(x)
        with full_precision(features.device):  # under autocast too: the head reads float32, scores are float32
            return self.head(self.standardise(features))
