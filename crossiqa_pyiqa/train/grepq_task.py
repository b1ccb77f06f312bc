"""GRepQ training tasks for the shared trainer (``scripts/pretrain_crossiqa.py -opt …``).

``grepq_lowlevel`` (DESIGN §3): each training crop is a pristine image; the task makes
its distorted versions with the degradation library (default 4 types × 2 levels + the
reference = 9), their FSIM matrix with pyiqa's ``fsim``, two fragment views, and the
quality-aware contrastive loss between them. Everything is batched over images.

``grepq_highlevel``: fine-tunes CLIP RN50's image tower with the group contrastive loss;
groups come from the pseudo-quality σ(10·(cos_good − cos_bad)) of the current tower
against the frozen text tower's prompt embeddings.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from crossiqa_pyiqa.train.registry import PretextTask, register_task

#: Default distortions of the low-level task: one per family that dominates authentic
#: datasets (blur, compression, noise, contrast). The release's own choice lives in its
#: offline data preparation, not in its code; see docs/GREPQ.md.
DEFAULT_TYPES = ('gaussian_blur', 'jpeg', 'white_noise', 'contrast_change')
DEFAULT_LEVELS = (2, 4)


def _network_options(opt: dict[str, Any]) -> dict[str, Any]:
    net = dict(opt.get('network') or {})
    kind = net.pop('type', 'GRepQ')
    if kind != 'GRepQ':
        raise ValueError(f'GRepQ tasks train a GRepQ network, not {kind!r}')
    return net


@register_task('grepq_lowlevel')
class GRepQLowLevel(PretextTask):
    """Quality-aware contrastive training of the ResNet-18 low-level encoder."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__()
        from crossiqa_pyiqa import degradations
        from crossiqa_pyiqa.archs.grepq_arch import GRepQ

        net = _network_options(opt)
        if net.get('use_clip'):
            raise ValueError('grepq_lowlevel trains the low-level encoder only (network.use_clip must be false)')
        self.model = GRepQ(pretrained=False, head='zeroshot', freeze_batchnorm=False, **net)
        self.opt = opt
        ver = dict(opt.get('versions') or {})
        self.types = tuple(ver.get('types', DEFAULT_TYPES))
        self.levels = tuple(ver.get('levels', DEFAULT_LEVELS))
        self.random_types = int(ver.get('random_types', 0))  # >0: draw this many types per step from `pool`
        self.pool = tuple(ver.get('pool', degradations.DEGRADATIONS))
        for name in self.types + self.pool:
            degradations.info(name)  # unknown names fail here, not mid-run
        frag = dict(opt.get('fragments') or {})
        self.grid, self.fragment = int(frag.get('grid', 7)), int(frag.get('size', 32))
        loss = dict(opt['train'].get('loss') or {})
        self.tau = float(loss.get('tau', 0.5))
        self.fsim_window = int(loss.get('fsim_window', 0))
        self.fsim_downsample = int(loss.get('fsim_downsample', 1))
        crop = int(opt['datasets']['train']['crop_size'])
        if crop < self.grid * self.fragment:
            raise ValueError(f'crop_size {crop} is smaller than the {self.grid}x{self.fragment}px fragment mosaic; '
                             'fragments are cut from the crop, use crop_size >= grid * size (e.g. 320).')

    @property
    def num_versions(self) -> int:
        return 1 + (self.random_types or len(self.types)) * len(self.levels)

    def step_types(self, generator: torch.Generator) -> tuple[str, ...]:
        if not self.random_types:
            return self.types
        idx = torch.randperm(len(self.pool), generator=generator)[:self.random_types]
        return tuple(self.pool[int(i)] for i in idx)

    def make_versions(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, 3, S, S) pristine crops → (B, V, 3, S, S): the reference, then each type at each level."""
        from crossiqa_pyiqa.degradations import apply

        versions = [x]
        for name in self.step_types(generator):
            for level in self.levels:
                versions.append(apply(x, name, level, generator=generator))
        return torch.stack(versions, dim=1)

    def views(self, versions: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Two fragment views; the second is an independent draw of positions, randomly flipped."""
        from crossiqa_pyiqa.grepq.fragments import random_flip, sample_fragments

        view_1 = sample_fragments(versions, generator, self.grid, self.fragment)
        view_2 = random_flip(sample_fragments(versions, generator, self.grid, self.fragment), generator)
        return view_1, view_2

    def forward(self, crops: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        from crossiqa_pyiqa.grepq.loss import qacl_loss
        from crossiqa_pyiqa.grepq.similarity import version_similarity

        x = crops.float() / 255.0
        versions = self.make_versions(x, generator)
        t0 = time.time()
        sim = version_similarity(versions, self.fsim_window, self.fsim_downsample)
        t_fsim = time.time() - t0
        view_1, view_2 = self.views(versions, generator)
        b, v = versions.shape[:2]
        feats = self.model.low_level_features(torch.cat([view_1, view_2]).flatten(0, 1)).reshape(2, b, v, -1)
        loss = qacl_loss(feats[0], feats[1], sim, self.tau)
        with torch.no_grad():
            off = ~torch.eye(v, dtype=torch.bool, device=sim.device)
            cos = torch.nn.functional.cosine_similarity(feats[0], feats[1], dim=-1)
        logs = {'loss': loss.item(), 'fsim_offdiag': sim[:, off].mean().item(), 'cos_same_version': cos.mean().item(),
                'sec_fsim': t_fsim}
        return loss, logs

    @torch.no_grad()
    def visualise(self, crops: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """First image: view 1 (top row) and view 2 (bottom row) of every version, reference first."""
        from torchvision.utils import make_grid

        versions = self.make_versions(crops[:1].float() / 255.0, generator)
        view_1, view_2 = self.views(versions, generator)
        rows = torch.cat([view_1[0], view_2[0]])
        return make_grid(rows, nrow=versions.shape[1], padding=2, pad_value=1.0)

    def export(self, path: str, info: dict[str, Any]) -> str:
        """The trained encoder; with a ``pristine:`` options section, also its pristine statistics."""
        self.model.eval()
        pristine = self.opt.get('pristine') or {}
        if pristine.get('dataroot'):
            from crossiqa_pyiqa.grepq.pristine import fit_pristine_statistics
            from crossiqa_pyiqa.train.data import list_images

            roots = pristine['dataroot'] if isinstance(pristine['dataroot'], list) else [pristine['dataroot']]
            mean, cov, meta = fit_pristine_statistics(
                self.model.ll, list_images(roots), self.model.config['patch_size'],
                float(pristine.get('sharpness_ratio', 0.75)), float(pristine.get('colour_ratio', 0.8)))
            with torch.no_grad():
                self.model.pristine_mean.copy_(mean)
                self.model.pristine_cov.copy_(cov)
            info = {**info, **meta, 'has_pristine_stats': True, 'pristine_dir': roots}
        return self.model.save_pretrained(path, info)


@register_task('grepq_highlevel')
class GRepQHighLevel(PretextTask):
    """Group-contrastive fine-tuning of CLIP RN50's image tower (text tower frozen, as prompt embeddings).

    ``network`` options: ``pretrained_model_path`` (low-level GRepQ file carried into the
    export; default the packaged ``grepq_ll``), ``clip_model_path`` (default
    ``~/.cache/clip/RN50.pt``), ``pretrained: false`` for random weights (tests only).
    """

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__()
        from crossiqa_pyiqa.archs.grepq_arch import GRepQ

        net = _network_options(opt)
        net['use_clip'] = True
        pretrained = bool(net.pop('pretrained', True))
        self.model = GRepQ(pretrained=pretrained, head='linear', freeze_batchnorm=False, **net)
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in self.model.clip_visual.parameters():
            p.requires_grad_(True)
        loss = dict(opt['train'].get('loss') or {})
        batch = int(opt['datasets']['train']['batch_size_per_gpu'])
        self.group_size = int(loss.get('group_size', max(2, batch // 32)))
        if self.group_size < 2 or 2 * self.group_size > batch:
            raise ValueError(f'group_size {self.group_size} needs 2 <= group_size <= batch/2 (batch {batch})')
        self.temperature = float(loss.get('temperature', 0.5))
        # The release's ProjectionHead (1024 → 128, ReLU): trained with the tower, not exported.
        self.projection = nn.Sequential(nn.Linear(1024, int(loss.get('projection_dim', 128))), nn.ReLU())

    def forward(self, crops: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        from crossiqa_pyiqa.grepq.clip_tower import clip_quality
        from crossiqa_pyiqa.grepq.loss import group_contrastive_loss

        feats = self.model.high_level_features(crops.float() / 255.0)
        with torch.no_grad():
            pseudo = clip_quality(feats, self.model.text_features, self.model.config['clip_scale'])
        order = torch.argsort(pseudo, stable=True)
        z = self.projection(feats)
        loss = group_contrastive_loss(z[order[:self.group_size]], z[order[-self.group_size:]], self.temperature)
        return loss, {'loss': loss.item(), 'pseudo_mean': pseudo.mean().item(),
                      'pseudo_spread': (pseudo[order[-1]] - pseudo[order[0]]).item()}

    def export(self, path: str, info: dict[str, Any]) -> str:
        """The full GRepQ file: low-level part as loaded, fine-tuned CLIP tower, prompt embeddings."""
        self.model.eval()
        return self.model.save_pretrained(path, {**info, 'clip_finetuned': True})
