"""Training tasks: what one step computes. The trainer (``trainer.py``) is shared.

A task is an ``nn.Module`` that owns the network being trained; its ``forward``
takes a batch of clean uint8 crops and a ``torch.Generator`` and returns
``(loss, logs)``. Being a module lets DDP wrap it directly, so gradient
synchronisation covers whatever the task's forward touches.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from crossiqa_pyiqa.train.registry import TASK_REGISTRY, PretextTask, register_task  # noqa: F401  (re-exported)


def build_task(opt: dict[str, Any]) -> 'PretextTask':
    name = opt.get('task', 'crossiqa_pretext')
    if name not in TASK_REGISTRY:
        if name.startswith('grepq'):
            import crossiqa_pyiqa.train.grepq_task  # noqa: F401  (registers GRepQ tasks)
        if name not in TASK_REGISTRY:
            raise KeyError(f'Unknown training task {name!r}; known: {sorted(TASK_REGISTRY)}')
    return TASK_REGISTRY[name](opt)


def _degradation_pairs(sampler, crops: torch.Tensor, generator: torch.Generator,
                       max_tries: int = 8, shared_halves: bool = False,
                       share_b: bool = False) -> tuple[list, list]:
    """Two degradation specs per image, different from each other (DESIGN §2.1 step 2).

    ``shared_halves``: image ``i + n/2`` gets the same first spec as image ``i`` (same
    degradation on different content); ``share_b``: the second spec too.
    """
    specs_a, specs_b = [], []
    n = crops.shape[0]
    for i in range(n):
        partner = i - n // 2 if shared_halves and n // 2 <= i < 2 * (n // 2) else None
        if partner is not None and share_b:
            specs_a.append(specs_a[partner])
            specs_b.append(specs_b[partner])
            continue
        sa = specs_a[partner] if partner is not None else sampler.sample(generator)
        sb = sampler.sample(generator)
        tries = 0
        while sb == sa and tries < max_tries:
            sb = sampler.sample(generator)
            tries += 1
        specs_a.append(sa)
        specs_b.append(sb)
    return specs_a, specs_b


def apply_specs(x: torch.Tensor, specs: list, generator: torch.Generator) -> torch.Tensor:
    """Degrade image ``i`` of ``x`` with the composition ``specs[i]``, batching images that share a spec."""
    from crossiqa_pyiqa import degradations

    out = x.clone()
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(tuple(spec), []).append(i)
    for spec, idx in groups.items():
        if not spec:
            continue
        sub = x[idx]
        for name, level in spec:
            sub = degradations.apply(sub, name, level, generator=generator)
        out[idx] = sub
    return out


def half_partners(n: int) -> torch.Tensor:
    """Index of each image's partner in a batch built with ``shared_halves``: i <-> i + n/2."""
    half = n // 2
    return torch.cat([torch.arange(half, 2 * half), torch.arange(half)])


def class_token_invariance(q: torch.Tensor, specs: list, temperature: float) -> torch.Tensor:
    """InfoNCE on class tokens: image ``i`` and ``i + n/2`` carry the same degradation on
    different content and must be each other's nearest token; tokens of other images with
    the very same degradation spec are not used as negatives."""
    n = q.shape[0]
    half = n // 2
    if half == 0:
        raise ValueError('the class-token invariance term needs a batch of at least 2 images')
    z = F.normalize(q[:2 * half].float(), dim=-1)
    logits = z @ z.t() / temperature
    keys = [tuple(s) for s in specs[:2 * half]]
    same = torch.tensor([[ki == kj for kj in keys] for ki in keys], device=q.device)
    partner = half_partners(n).to(q.device)
    drop = same.clone()
    drop[torch.arange(2 * half), partner] = False  # keep the positive
    logits = logits.masked_fill(drop, float('-inf'))
    return F.cross_entropy(logits, partner)


@register_task('crossiqa_pretext')
class CrossIQAPretext(PretextTask):
    """DESIGN §2.1: reconstruct each degraded view from its own class token and the other view's patches."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__()
        from crossiqa_pyiqa.archs.crossiqa_arch import CrossIQA
        from crossiqa_pyiqa.degradations import DegradationSampler

        net_opt = {k: v for k, v in opt['network'].items() if k != 'type'}
        if opt['network'].get('type', 'CrossIQA') != 'CrossIQA':
            raise ValueError(f"crossiqa_pretext trains a CrossIQA network, not {opt['network']['type']!r}")
        crop = opt['datasets']['train']['crop_size']
        net_opt.setdefault('img_size', crop)
        if net_opt['img_size'] != crop:
            raise ValueError(f"network.img_size ({net_opt['img_size']}) must equal the training crop_size ({crop})")
        self.model = CrossIQA(pretrained=False, **net_opt)
        deg = dict(opt.get('degradations', {}))
        self.sampler = DegradationSampler(**deg)
        loss = opt['train'].get('loss', {})
        self.self_weight = float(loss.get('self_weight', 0.0))
        self.norm_pix = bool(loss.get('norm_pix', False))
        self.lowfreq_weight = float(loss.get('lowfreq_weight', 0.0))
        # addition: per-patch high-frequency energy, which pixel MSE cannot ask for (the MSE-optimal
        # rendering of a noisy target is its clean mean, so noise would never reach the class token)
        self.highfreq_weight = float(loss.get('highfreq_weight', 0.0))
        self.mask_ratio = float(opt['train'].get('mask_ratio', 0.0))
        # addition to the paper: the class token should code the degradation, not the content
        self.invariance_weight = float(loss.get('invariance_weight', 0.0))
        self.invariance_temperature = float(loss.get('invariance_temperature', 0.1))
        # addition: the cross terms take the class tokens of another image with the same
        # degradations (other content), see CrossIQA.pretext(quality_source=...)
        self.cross_partner = bool(loss.get('cross_partner', False))
        if self.invariance_weight < 0 or self.invariance_temperature <= 0:
            raise ValueError('train.loss.invariance_weight must be >= 0 and invariance_temperature > 0')

    def degrade(self, crops: torch.Tensor, generator: torch.Generator,
                return_specs: bool = False):
        x = crops.float() / 255.0
        specs_a, specs_b = _degradation_pairs(self.sampler, x, generator,
                                              shared_halves=self.invariance_weight > 0 or self.cross_partner,
                                              share_b=self.cross_partner)
        a, b = apply_specs(x, specs_a, generator), apply_specs(x, specs_b, generator)
        return (a, b, specs_a) if return_specs else (a, b)

    def _partners(self, n: int) -> torch.Tensor | None:
        """Image i's class tokens come from image i ± n/2 (same specs, other content)."""
        if not self.cross_partner:
            return None
        if n < 2 or n % 2:
            raise ValueError(f'train.loss.cross_partner needs an even batch of at least 2 images, got {n}')
        return half_partners(n)

    def _target(self, img: torch.Tensor) -> torch.Tensor:
        target = self.model.patchify(img)
        if self.norm_pix:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return target

    def _rec_loss(self, pred: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(pred, self._target(img))
        if self.lowfreq_weight > 0:  # colour / low-frequency term: per-patch mean colour
            p = self.model.patch_size
            pm = pred.reshape(*pred.shape[:2], p * p, 3).mean(2)
            tm = self.model.patchify(img).reshape(*pred.shape[:2], p * p, 3).mean(2)
            loss = loss + self.lowfreq_weight * F.mse_loss(pm, tm)
        if self.highfreq_weight > 0:
            loss = loss + self.highfreq_weight * F.mse_loss(self._highfreq_energy(pred), self._highfreq_energy(img))
        return loss

    def _highfreq_energy(self, x: torch.Tensor) -> torch.Tensor:
        """Per patch and channel: RMS of the image minus its 3x3 box blur (B, L, 3); ``x`` is an
        image (B, 3, H, W) or the decoder's patch sequence."""
        if x.dim() == 3:
            x = self.model.unpatchify(x)
        residual = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode='replicate'), 3, stride=1)
        p = self.model.patch_size
        return F.avg_pool2d(residual.pow(2), p).add(1e-6).sqrt().flatten(2).transpose(1, 2)

    def forward(self, crops: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        a, b, specs_a = self.degrade(crops, generator, return_specs=True)
        out = self.model.pretext(a, b, mask_ratio=self.mask_ratio, with_self=self.self_weight > 0,
                                 generator=generator, quality_source=self._partners(a.shape[0]))
        cross = 0.5 * (self._rec_loss(out['cross_a'], a) + self._rec_loss(out['cross_b'], b))
        loss = cross
        logs = {'loss_cross': cross.item()}
        if self.self_weight > 0:
            self_term = 0.5 * (self._rec_loss(out['self_a'], a) + self._rec_loss(out['self_b'], b))
            loss = loss + self.self_weight * self_term
            logs['loss_self'] = self_term.item()
        if self.invariance_weight > 0:
            inv = class_token_invariance(out['q_a'], specs_a, self.invariance_temperature)
            loss = loss + self.invariance_weight * inv
            logs['loss_inv'] = inv.item()
        logs['loss'] = loss.item()
        return loss, logs

    @torch.no_grad()
    def visualise(self, crops: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Rows like the paper's Figure 3: content input b | cross reconstruction D(q_a, P_b) | target a."""
        from torchvision.utils import make_grid

        n = min(4, crops.shape[0])
        a, b = self.degrade(crops[:n], generator)
        out = self.model.pretext(a, b, with_self=False)
        rec = out['cross_a']
        if self.norm_pix:  # undo the per-patch normalisation with the target's statistics
            t = self.model.patchify(a)
            rec = rec * (t.var(-1, keepdim=True) + 1e-6).sqrt() + t.mean(-1, keepdim=True)
        rec = self.model.unpatchify(rec).clamp(0, 1)
        rows = torch.stack([b, rec, a], dim=1).flatten(0, 1)
        return make_grid(rows, nrow=3, padding=2, pad_value=1.0)

    def export(self, path: str, info: dict[str, Any]) -> str:
        return self.model.save_pretrained(path, info)
