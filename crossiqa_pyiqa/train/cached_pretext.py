"""Cross-IQA's pretext with cached frozen stages and the statistics decoder (DESIGN §2.5).

Same method as ``crossiqa_pretext`` (two degraded views of one crop, shared encoder,
the decoder renders each view from its own quality code and the *other* view's
content), made cheap enough for a CPU to see ten times more pairs:

- the frozen backbone stages run once per degraded view (``train/view_cache.py``);
  a step runs only the trainable stages, the quality read-out and the decoder;
- the decoder renders a low-resolution summary of the view, mean colour and log
  band energies per 8x8 cell (``archs/stats_decoder.py``), instead of 16x16x3 pixels.

Optional level term (``train.loss.level_weight`` > 0): the reconstruction asks ``q`` for a
view's colour and band energy, and real sensor grain *is* band energy, so ``q`` alone cannot
tell grain from detail (docs/ABLATIONS.md, "Where the preference for real grain lives"). The
cache keeps each view's degradation spec, so a linear head can be asked to read, from the
difference of the two views' ``q`` (same crop, so the content cancels), how much more noise,
blur and sharpening one view has than the other (``train.loss.level_groups`` may add colour,
exposure and contrast; :data:`LEVEL_GROUPS`). The labels are the synthetic degradations' own
levels: no human score is used.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from crossiqa_pyiqa.train.registry import PretextTask, register_task

CACHE_DEFAULTS = {'dir': None, 'crops': 2048, 'views': 8, 'shard_crops': 64}
LOSS_DEFAULTS = {'self_weight': 0.0, 'colour_weight': 10.0, 'fine_weight': 1.0, 'middle_weight': 1.0,
                 'level_weight': 0.0}
#: The level groups the level term asks for unless ``train.loss.level_groups`` names others.
DEFAULT_LEVEL_GROUPS = ('noise', 'blur', 'sharpen')


def _level_groups() -> dict[str, tuple[str, ...]]:
    from crossiqa_pyiqa.degradations.families import TYPE_FAMILIES

    def family(name: str) -> tuple[str, ...]:
        return tuple(t for t, f in TYPE_FAMILIES.items() if name in f.families)

    return {'noise': family('noise'),
            'blur': tuple(t for t, f in TYPE_FAMILIES.items() if f.family == 'blur'),
            'sharpen': ('high_sharpen',),
            'colour': family('colour'), 'exposure': family('exposure'), 'contrast': family('contrast')}


#: What the level term can read from q: a view's strength in a group is the largest level/5 of its spec's steps
#: of that group's types (0 if none). Noise includes low_light (gain noise); sharpening adds fine energy too;
#: colour, exposure and contrast are the library's families of those names (degradations/families.py).
LEVEL_GROUPS: dict[str, tuple[str, ...]] = _level_groups()


def level_groups(names: Any) -> dict[str, tuple[str, ...]]:
    """The :data:`LEVEL_GROUPS` named by ``train.loss.level_groups``, in order; refuses unknown or repeated ones."""
    if isinstance(names, str) or not names:
        raise ValueError(f'train.loss.level_groups must be a non-empty list of {sorted(LEVEL_GROUPS)}, got {names!r}')
    names = [str(n) for n in names]
    unknown = sorted(set(names) - set(LEVEL_GROUPS))
    if unknown or len(set(names)) != len(names):
        raise ValueError(f'train.loss.level_groups: unknown or repeated group(s) in {names}; choose from '
                         f'{sorted(LEVEL_GROUPS)}')
    return {n: LEVEL_GROUPS[n] for n in names}


def level_membership(names: Sequence[str], groups: dict[str, tuple[str, ...]] | None = None) -> torch.Tensor:
    """(types, groups) 0/1: which of ``groups`` (default: :data:`DEFAULT_LEVEL_GROUPS`) each of ``names`` is in."""
    groups = level_groups(DEFAULT_LEVEL_GROUPS) if groups is None else groups
    return torch.tensor([[float(t in types) for types in groups.values()] for t in names])


def shard_generator(seed: int, first_crop: int) -> torch.Generator:
    """The random stream that draws the degradation specs and seeds of the shard starting at ``first_crop``."""
    return torch.Generator().manual_seed(int(hashlib.sha256(f'{seed}:{first_crop}'.encode()).hexdigest()[:15], 16))


def level_strengths(spec_types: torch.Tensor, spec_levels: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """(B, groups) strengths in [0, 1] from cached specs (B, steps) and a (types, groups) 0/1 membership."""
    valid = (spec_types >= 0).unsqueeze(-1)
    member = membership[spec_types.long().clamp(min=0)] * valid        # (B, steps, groups)
    return (member * (spec_levels.float() / 5).clamp(0, 1).unsqueeze(-1)).amax(dim=1)


@register_task('crossiqa_cached_pretext')
class CachedCrossIQAPretext(PretextTask):
    """Cross reconstruction of per-cell statistics from cached frozen-stage maps."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__()
        from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA
        from crossiqa_pyiqa.archs.stats_decoder import statistics_groups
        from crossiqa_pyiqa.degradations import DegradationSampler

        if opt['network'].get('type', 'CrossIQA') != 'CrossIQA':
            raise ValueError(f"crossiqa_cached_pretext trains a CrossIQA network, not {opt['network']['type']!r}")
        net_opt = {k: v for k, v in opt['network'].items() if k != 'type'}
        crop = int(opt['datasets']['train']['crop_size'])
        net_opt.setdefault('img_size', crop)
        if net_opt['img_size'] != crop:
            raise ValueError(f"network.img_size ({net_opt['img_size']}) must equal the training crop_size ({crop})")
        self.model = CrossIQA(pretrained=False, **net_opt)
        c = self.model.config
        if not self.model.is_cnn or c['decoder'] != 'stats':
            raise ValueError("crossiqa_cached_pretext needs a CNN backbone and network.decoder: stats "
                             f"(got backbone={c['backbone']!r}, decoder={c['decoder']!r})")
        enc = self.model.encoder
        first = enc.backbone.first_trainable
        if first < 1 or c['content_stage'] != first - 1 or c['quality_stage'] < first:
            raise ValueError(f'crossiqa_cached_pretext caches the last frozen stage ({first - 1}): it needs '
                             f'content_stage == {first - 1} and quality_stage >= {first}; got '
                             f"content_stage={c['content_stage']}, quality_stage={c['quality_stage']} "
                             f"(trainable_stages={c['trainable_stages']})")
        if any(s >= first for s in enc.global_stages):
            raise ValueError(f'quality_global_stages {list(enc.global_stages)} must be frozen stages (< {first}) '
                             'to be cached')
        self.degradation_opts = dict(opt.get('degradations', {}))
        self.sampler = DegradationSampler(**self.degradation_opts)
        cache = dict(opt['datasets']['train'].get('view_cache') or {})
        unknown = set(cache) - set(CACHE_DEFAULTS)
        if unknown:
            raise ValueError(f'Unknown datasets.train.view_cache option(s) {sorted(unknown)}; valid: '
                             f'{sorted(CACHE_DEFAULTS)}')
        self.cache_opts = {**CACHE_DEFAULTS, **cache}
        loss = {**LOSS_DEFAULTS, 'level_groups': DEFAULT_LEVEL_GROUPS, **(opt['train'].get('loss') or {})}
        if any(float(loss[k]) < 0 for k in LOSS_DEFAULTS):
            raise ValueError(f'train.loss weights must be >= 0, got {loss}')
        self.self_weight = float(loss['self_weight'])
        groups = statistics_groups(c['patch_size'], c['stats_cell'])
        weights = sum(float(loss[f'{g}_weight']) * m.float() for g, m in groups.items())
        if float(weights.sum()) == 0:
            raise ValueError('train.loss: colour_weight, fine_weight and middle_weight are all 0')
        self.register_buffer('target_weights', weights / weights.mean(), persistent=False)
        self.level_weight = float(loss['level_weight'])
        self.level_groups = level_groups(loss['level_groups'])
        if self.level_weight > 0:  # only then: checkpoints of runs without the term keep loading
            membership = level_membership(self.sampler.names, self.level_groups)
            if not membership.any(dim=0).all():
                absent = [g for g, m in zip(self.level_groups, membership.any(dim=0)) if not m]
                raise ValueError(f'train.loss.level_weight > 0 but degradations.weights draws no type of level '
                                 f'group(s) {absent}; groups: {self.level_groups}')
            self.register_buffer('level_membership', membership, persistent=False)
            self.level_head = torch.nn.Linear(c['embed_dim'], len(self.level_groups))
        self.groups = groups
        self.seed = int(opt.get('manual_seed', 0))
        self.crop = crop

    # ------------------------------------------------------------------ cache
    def cache_key(self, paths: Sequence[str]) -> dict[str, Any]:
        from crossiqa_pyiqa.optionfile import to_plain
        from crossiqa_pyiqa.train.view_cache import degradations_code_digest, frozen_weights_digest, images_digest

        c, enc = self.model.config, self.model.encoder
        return {'backbone': c['backbone'], 'first_trainable_stage': enc.backbone.first_trainable,
                'frozen_weights_sha256': frozen_weights_digest(enc.backbone, enc.backbone.first_trainable),
                'crop_size': self.crop, 'patch_size': c['patch_size'], 'stats_cell': c['stats_cell'],
                'quality_global_stages': list(enc.global_stages),
                'degradations': json.loads(json.dumps(to_plain(self.degradation_opts), sort_keys=True)),
                'degradations_code_sha256': degradations_code_digest(),
                'degradation_types': list(self.sampler.names), 'spec_width': self.sampler.max_compose,
                'images': len(paths), 'images_sha256': images_digest(paths), 'seed': self.seed}

    def _shard_maker(self, crops_dataset: Dataset, views: int) -> Callable[[int, int], dict[str, torch.Tensor]]:
        from crossiqa_pyiqa.archs.stats_decoder import quality_statistics
        from crossiqa_pyiqa.train.view_cache import encode_specs

        enc, c = self.model.encoder, self.model.config
        last_frozen = enc.backbone.first_trainable - 1
        chunk = 32

        @torch.no_grad()
        def make(first: int, n: int) -> dict[str, torch.Tensor]:
            crops = torch.stack([crops_dataset[first + j] for j in range(n)]).float().div_(255)
            x = crops.repeat_interleave(views, dim=0)
            g = shard_generator(self.seed, first)
            specs, seeds = self.sampler.sample_batch(x.shape[0], g)
            maps, stats, targets = [], [], []
            for s in range(0, x.shape[0], chunk):
                v = self.sampler.apply_specs(x[s:s + chunk], specs[s:s + chunk], seeds[s:s + chunk])
                fmaps = enc.backbone(v, upto=last_frozen)
                maps.append(fmaps[last_frozen].half())
                if enc.global_stages:
                    stats.append(enc.global_statistics(v, fmaps))
                targets.append(quality_statistics(v, c['patch_size'], c['stats_cell']).half())
            spec_types, spec_levels = encode_specs(specs, self.sampler.names, self.sampler.max_compose)
            unflat = lambda t: t.reshape(n, views, *t.shape[1:])  # noqa: E731
            return {'maps': unflat(torch.cat(maps)),
                    'stats': unflat(torch.cat(stats)) if stats else torch.zeros(n, views, 0),
                    'targets': unflat(torch.cat(targets)),
                    'spec_types': unflat(spec_types), 'spec_levels': unflat(spec_levels)}

        return make

    def make_dataset(self, paths: Sequence[str], out_dir: str, build: bool = True,
                     wait: Callable[[], None] | None = None) -> Dataset:
        """Build (if ``build``) or check the view cache, load it, and return the pair dataset."""
        import os

        from crossiqa_pyiqa.train.data import RandomCropDataset
        from crossiqa_pyiqa.train.view_cache import CachedPairDataset, ViewCache

        o = self.cache_opts
        folder = o['dir'] or os.path.join(out_dir, 'view_cache')
        cache = ViewCache(folder, self.cache_key(paths), int(o['crops']), int(o['views']), int(o['shard_crops']))
        if build:
            cache.check_key()  # refuse a foreign cache before decoding any image
            if cache.missing_shards():
                crops = RandomCropDataset(paths, self.crop, seed=self.seed, cache_images=True)
                self.skipped_images = list(crops.skipped)
                self.model.eval()
                cache.build(self._shard_maker(crops, int(o['views'])))
                self.model.train()
        if wait is not None:
            wait()
        data = cache.load()
        if self.model.encoder.global_stages:
            self.model.encoder.set_global_statistics(data['stats'].flatten(0, 1))
        self.cache_folder = folder
        return CachedPairDataset(data, seed=self.seed)

    # ------------------------------------------------------------------ step
    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((pred - target.float()).square() * self.target_weights).mean()

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        n = batch['maps_a'].shape[0]
        enc = self.model.encoder.forward_cached(torch.cat([batch['maps_a'], batch['maps_b']]),
                                                torch.cat([batch['stats_a'], batch['stats_b']]))
        q, patches = enc['cls'], enc['patches']
        q_in, content = q, torch.cat([patches[n:], patches[:n]])  # cross: D(q_a, P_b) -> a, D(q_b, P_a) -> b
        targets = torch.cat([batch['targets_a'], batch['targets_b']])
        if self.self_weight > 0:
            q_in, content = torch.cat([q_in, q]), torch.cat([content, patches])
        pred = self.model.decoder(q_in, content)
        cross = self._loss(pred[:2 * n], targets)
        loss, logs = cross, {'loss_cross': cross.item()}
        with torch.no_grad():
            err = (pred[:2 * n] - targets.float()).square()
            for name, mask in self.groups.items():
                logs[f'mse_{name}'] = err[..., mask.to(err.device)].mean().item()
        if self.self_weight > 0:
            self_term = self._loss(pred[2 * n:], targets)
            loss = loss + self.self_weight * self_term
            logs['loss_self'] = self_term.item()
        if self.level_weight > 0:
            strength = [level_strengths(batch[f'spec_types_{v}'], batch[f'spec_levels_{v}'], self.level_membership)
                        for v in 'ab']
            err = (self.level_head(q[:n] - q[n:]) - (strength[0] - strength[1])).square()
            level = err.mean()
            loss = loss + self.level_weight * level
            logs['loss_level'] = level.item()
            for j, name in enumerate(self.level_groups):
                logs[f'mse_level_{name}'] = err[:, j].mean().item()
        logs['loss'] = loss.item()
        return loss, logs

    def export(self, path: str, info: dict[str, Any]) -> str:
        """The network's weight file; with the level term, the level head too (``CrossIQA.level_head``), so a
        metric can read the pretext's noise reading (``noise_source='level'``)."""
        info = {**info, 'view_cache': getattr(self, 'cache_folder', None)}
        if self.level_weight <= 0:
            return self.model.save_pretrained(path, info)
        self.model.set_level_head(self.level_head, {
            'outputs': list(self.level_groups), 'groups': {k: list(v) for k, v in self.level_groups.items()},
            'target': 'level / 5 difference of two views of one crop, read from q_a - q_b', 'level_weight':
            self.level_weight})
        try:  # attached for the file only: the trainer's checkpoints keep the head under the task
            return self.model.save_pretrained(path, info)
        finally:
            self.model.set_level_head(None)
