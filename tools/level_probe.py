#!/usr/bin/env python
"""Does the frozen class token encode degradation level on images the pretext never saw?

    python tools/level_probe.py runs/ablation_cache/ltest-*.npz

Reads the held-out feature caches written by ``tools/ablation_eval.py`` (12 Kodak24
crops x [pristine + 25 types x 5 levels], superset features) and, per degradation type,
fits a ridge probe from the features to the level (0..5) on 2/3 of the images and
predicts it on the other 1/3 (3 folds by image). Reports, averaged over the 25 types,
two SRCCs between predicted and true level on the unseen images:

- *within image*: per unseen image and type (the L-test of DESIGN §5) — does the probe
  order the six versions of one image correctly?
- *pooled*: across all unseen images of a type — is its prediction also on the same
  scale from one content to the next?
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probes import FEATURE_SETS, feature_index, per_type_probe  # noqa: E402


class _Cfg:  # feature_index only needs the encoder's width and depth
    def __init__(self, embed_dim: int, depth: int) -> None:
        self.config = {'embed_dim': embed_dim, 'depth': depth}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('caches', nargs='+')
    p.add_argument('--sets', nargs='+', default=['cls', 'cls+mean+std mid+last 2 scales'])
    p.add_argument('--embed-dim', type=int, default=192)
    p.add_argument('--depth', type=int, default=6)
    args = p.parse_args()
    net = _Cfg(args.embed_dim, args.depth)
    print('| features cache | ' + ' | '.join(f'{s}: within image | {s}: pooled' for s in args.sets) + ' |')
    print('|---|' + '---|---|' * len(args.sets))
    for path in args.caches:
        feats = np.load(path, allow_pickle=False)['features']
        vals = [v for s in args.sets for v in per_type_probe(feats, feature_index(net, FEATURE_SETS[s]))]
        print(f'| {os.path.basename(path)} | ' + ' | '.join(f'{v:.3f}' for v in vals) + ' |', flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
