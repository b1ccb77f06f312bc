"""GRepQ building blocks (Srinath et al., WACV 2024), one concept per module.

- :mod:`.loss`: quality-aware contrastive loss (low level) and group contrastive loss (high level).
- :mod:`.fragments`: 7×7 grids of 32×32 fragments, aligned across the versions of one image.
- :mod:`.similarity`: FSIM between all versions of an image, batched through pyiqa's ``fsim``.
- :mod:`.pristine`: the sharp-and-colourful pristine patch bank and the NIQE-style distance.
- :mod:`.clip_tower`: CLIP RN50 from a local file only, with a resolution-free attention pool.

The network that uses them is :class:`crossiqa_pyiqa.archs.grepq_arch.GRepQ`; training
tasks are in :mod:`crossiqa_pyiqa.train.grepq_task`.
"""
from crossiqa_pyiqa.grepq.fragments import random_flip, sample_fragments
from crossiqa_pyiqa.grepq.loss import fsim_weights, group_contrastive_loss, qacl_loss

__all__ = ['fsim_weights', 'group_contrastive_loss', 'qacl_loss', 'random_flip', 'sample_fragments']
