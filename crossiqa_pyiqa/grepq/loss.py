r"""GRepQ's two training losses, written from DESIGN §3 (not copied from the release).

Quality-aware contrastive loss (QACL), low-level encoder. Versions ``k`` (view 1) and ``l``
(view 2) of one image are soft positives with weight
:math:`\alpha_{kl} = 2 - 2/(1 + s_{kl}^2)` where :math:`s_{kl}` is their FSIM: versions of
similar quality attract, versions of different quality repel, whatever the distortion
type. With cosine logits :math:`c_{kl}` divided by the temperature,

.. math:: L = \mathrm{mean}_k -\log \frac{\sum_l \alpha_{kl} e^{c_{kl}}}{\sum_l e^{c_{kl}}}
          + \mathrm{mean}_l -\log \frac{\sum_k \alpha_{kl} e^{c_{kl}}}{\sum_k e^{c_{kl}}}.

Only versions of the same image are compared (there are no cross-image negatives), so
the batch size only averages.

Group contrastive loss (GCL), high-level CLIP tower: the images of a batch with the
lowest and highest pseudo-quality form two groups; an image's positive is its mean
similarity to its own group, its negatives are the members of the other group.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def fsim_weights(similarity: torch.Tensor) -> torch.Tensor:
    """α = 2 − 2/(1 + s²): 1 for identical quality (s = 1), falling towards 0 as s falls."""
    return 2.0 - 2.0 / (1.0 + similarity ** 2)


def qacl_loss(features_1: torch.Tensor, features_2: torch.Tensor, similarity: torch.Tensor,
              tau: float = 0.5) -> torch.Tensor:
    """QACL of two views. ``features_*``: (B, V, D), ``similarity``: (B, V, V) FSIM between versions.

    Computed in log space (log-sum-exp), so small temperatures and zero weights are safe.
    """
    if features_1.shape != features_2.shape or features_1.dim() != 3:
        raise ValueError(f'features must both be (B, V, D), got {tuple(features_1.shape)} and '
                         f'{tuple(features_2.shape)}')
    b, v, _ = features_1.shape
    if similarity.shape != (b, v, v):
        raise ValueError(f'similarity must be ({b}, {v}, {v}), got {tuple(similarity.shape)}')
    z1 = F.normalize(features_1, dim=-1, eps=1e-8)
    z2 = F.normalize(features_2, dim=-1, eps=1e-8)
    logits = z1 @ z2.transpose(1, 2) / tau  # c_kl / τ: view-1 version k vs view-2 version l
    log_alpha = torch.log(fsim_weights(similarity.to(logits.dtype)))
    view_1 = torch.logsumexp(logits + log_alpha, dim=2) - torch.logsumexp(logits, dim=2)
    view_2 = torch.logsumexp(logits + log_alpha, dim=1) - torch.logsumexp(logits, dim=1)
    return -view_1.mean() - view_2.mean()


def group_contrastive_loss(group_a: torch.Tensor, group_b: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """GCL between two groups of features (G, D) each, G ≥ 2, symmetric in the groups."""
    g = group_a.shape[0]
    if group_b.shape != group_a.shape or group_a.dim() != 2 or g < 2:
        raise ValueError(f'groups must both be (G, D) with G >= 2, got {tuple(group_a.shape)} and '
                         f'{tuple(group_b.shape)}')
    z = F.normalize(torch.cat([group_a, group_b]), dim=-1, eps=1e-8)
    sim = z @ z.T
    group = torch.arange(2 * g, device=z.device) // g
    same = group[:, None] == group[None, :]
    own = same & ~torch.eye(2 * g, dtype=torch.bool, device=z.device)
    positive = (sim * own).sum(dim=1) / (g - 1) / temperature  # mean similarity to the own group
    negatives = (sim / temperature).masked_fill(same, float('-inf'))  # the other group only
    logits = torch.cat([positive[:, None], negatives], dim=1)
    return -(positive - torch.logsumexp(logits, dim=1)).mean()
