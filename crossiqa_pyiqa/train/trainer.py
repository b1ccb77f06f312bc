"""The plugin's one trainer: options, DDP, schedule, checkpoints, resume, logging, export.

Launch on one process with ``python scripts/pretrain_crossiqa.py -opt …`` or on
several with ``torchrun --nproc_per_node N scripts/pretrain_crossiqa.py -opt …``
(nccl on GPUs, gloo on CPU; multi-node through torchrun's rendezvous flags).
"""
from __future__ import annotations

import glob
import math
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from crossiqa_pyiqa.train.data import RandomCropDataset, StepSampler, list_images
from crossiqa_pyiqa.train.options import to_plain, validate_options
from crossiqa_pyiqa.train import cached_pretext  # noqa: F401  (registers crossiqa_cached_pretext)
from crossiqa_pyiqa.train.tasks import build_task


def _setup_distributed(opt: dict[str, Any]) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed when launched by torchrun; returns (rank, world, device)."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and not dist.is_initialized():
        backend = opt.get('dist_params', {}).get('backend', 'auto')
        if backend == 'auto':
            backend = 'nccl' if torch.cuda.is_available() else 'gloo'
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available() and opt.get('num_gpu', 'auto') != 0:
        local = int(os.environ.get('LOCAL_RANK', '0'))
        torch.cuda.set_device(local)
        device = torch.device('cuda', local)
    else:
        device = torch.device('cpu')
    return rank, world, device


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up then cosine decay to ``min_ratio`` of the base learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _git_commit() -> str:
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=root, capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ('-dirty' if dirty else '') if out.returncode == 0 else 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def _atomic_torch_save(obj: Any, path: str) -> None:
    tmp = f'{path}.tmp'
    torch.save(obj, tmp)
    os.replace(tmp, path)


def find_latest_checkpoint(folder: str) -> str | None:
    ckpts = sorted(glob.glob(os.path.join(folder, 'ckpt_*.pth')))
    return ckpts[-1] if ckpts else None


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read (truncated, not a checkpoint, or an unsafe old format)."""


CHECKPOINT_KEYS = ('step', 'model', 'optimizer', 'scheduler', 'rng')


def rng_state() -> dict[str, Any]:
    """torch, numpy and Python RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {'torch': torch.get_rng_state(),
            'numpy': {'name': str(name), 'keys': torch.from_numpy(np.asarray(keys, dtype=np.int64)), 'pos': int(pos),
                      'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
            'python': {'version': int(version), 'internal': [int(v) for v in internal], 'gauss_next': gauss_next}}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'].cpu())
    n = state['numpy']
    np.random.set_state((n['name'], n['keys'].cpu().numpy().astype(np.uint32), int(n['pos']), int(n['has_gauss']),
                         float(n['cached_gaussian'])))
    p = state['python']
    random.setstate((int(p['version']), tuple(int(v) for v in p['internal']), p['gauss_next']))


def read_checkpoint(path: str, map_location: Any = 'cpu') -> dict[str, Any]:
    """A checkpoint, read with ``weights_only=True``: tensors and plain types only, so no file can run code."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Checkpoint to resume from not found: {path}')
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, objects outside the safe set...
        unsafe = 'Weights only load failed' in str(error)
        raise CheckpointError(
            f'Checkpoint {path} cannot be read' + (
                ': it holds objects other than tensors and plain types, which are not loaded because '
                'unpickling them could run code (checkpoints of this version store only tensors and plain data)'
                if unsafe else f' ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""})')
            + '.') from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f'Checkpoint {path} is not a trainer checkpoint (needs {list(CHECKPOINT_KEYS)}, '
                              f'has {have}).')
    return ckpt


class Trainer:
    """Runs a task (``train/tasks.py``) for ``train.total_iter`` steps.

    Everything a resumed run needs is in the checkpoint: model, optimiser,
    scheduler, step, RNG states. Data and degradations are drawn from
    generators seeded by ``(manual_seed, step, rank)``, so a resumed run
    reproduces the uninterrupted one exactly on the same hardware.
    """

    def __init__(self, opt: dict[str, Any], out_dir: str, resume: str | None = None) -> None:
        validate_options(opt, 'pretrain')  # unknown keys (a misspelt self_weight...) fail before any work
        self.opt = opt
        self.out_dir = out_dir
        self.rank, self.world, self.device = _setup_distributed(opt)
        self.is_main = self.rank == 0
        threads = opt.get('num_threads')
        if threads:
            torch.set_num_threads(int(threads))
        self.seed = int(opt.get('manual_seed', 0))
        torch.manual_seed(self.seed)  # identical initial weights on every rank
        random.seed(self.seed)
        np.random.seed(self.seed)

        tr = opt['train']
        self.total = int(tr['total_iter'])
        self.task = build_task(opt).to(self.device)
        optim = dict(tr.get('optim', {}))
        kind = optim.pop('type', 'AdamW')
        if kind != 'AdamW':
            raise ValueError(f'Only AdamW is supported (DESIGN §2.1), got {kind!r}')
        optim.setdefault('lr', 3e-4)
        # a pretrained backbone is fine-tuned gently (DESIGN §2.4): its own learning-rate factor
        backbone_scale = float(optim.pop('backbone_lr_scale', 1.0))
        groups: dict[tuple[bool, bool], list] = {}
        for name, p in self.task.named_parameters():
            if not p.requires_grad:
                continue
            no_decay = p.ndim <= 1 or name.endswith(('pos_embed', 'cls_token', 'mask_token'))
            groups.setdefault((no_decay, '.backbone.' in name), []).append(p)
        wd = optim.pop('weight_decay', 0.05)
        self.optimizer = torch.optim.AdamW(
            [{'params': params, 'weight_decay': 0.0 if no_decay else wd,
              'lr': optim['lr'] * (backbone_scale if in_backbone else 1.0)}
             for (no_decay, in_backbone), params in sorted(groups.items())], **optim)
        sch = tr.get('scheduler', {})
        warmup, min_ratio = int(sch.get('warmup_iter', 0)), float(sch.get('min_lr_ratio', 0.0))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total, warmup, min_ratio))
        self.grad_clip = tr.get('grad_clip')
        self.step = 0

        self.module = self.task
        if self.world > 1:
            # the head and (without masking) the mask token take no part in the pretext
            self.module = DistributedDataParallel(self.task, device_ids=[self.device.index]
                                                  if self.device.type == 'cuda' else None,
                                                  find_unused_parameters=True)

        log = opt.get('logger', {})
        self.print_freq = int(log.get('print_freq', 10))
        self.ckpt_freq = int(log.get('save_checkpoint_freq', 500))
        self.keep = int(log.get('keep_checkpoints', 3))
        self.visual_freq = int(log.get('visual_freq', 0))
        self.ckpt_dir = os.path.join(out_dir, 'checkpoints')
        if self.is_main:
            os.makedirs(self.ckpt_dir, exist_ok=True)
        self.writer = None
        if self.is_main and log.get('use_tb_logger', True):
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(os.path.join(out_dir, 'tb_logger'))

        if resume == 'auto':
            self.resume_auto()
        elif resume:
            self.load_checkpoint(resume)
        self._stop_signal: int | None = None

    # -------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        return {'step': self.step, 'model': self.task.state_dict(), 'optimizer': self.optimizer.state_dict(),
                'scheduler': self.scheduler.state_dict(), 'options': to_plain(self.opt),
                'rng': rng_state()}

    def save_checkpoint(self) -> str | None:
        if not self.is_main:
            return None
        path = os.path.join(self.ckpt_dir, f'ckpt_{self.step:08d}.pth')
        _atomic_torch_save(self.state(), path)
        for old in sorted(glob.glob(os.path.join(self.ckpt_dir, 'ckpt_*.pth')))[:-self.keep]:
            os.remove(old)
        return path

    def load_checkpoint(self, path: str, ckpt: dict[str, Any] | None = None) -> None:
        ckpt = ckpt if ckpt is not None else read_checkpoint(path, self.device)
        self.task.load_state_dict(ckpt['model'])
        self.optimizer.load_state_dict(ckpt['optimizer'])
        self.scheduler.load_state_dict(ckpt['scheduler'])
        self.step = int(ckpt['step'])
        set_rng_state(ckpt['rng'])
        if self.is_main:
            print(f'Resumed from {path} at step {self.step}', flush=True)

    def resume_auto(self) -> str | None:
        """Resume from the newest readable checkpoint; unreadable newer ones are named and skipped."""
        import warnings

        for path in sorted(glob.glob(os.path.join(self.ckpt_dir, 'ckpt_*.pth')), reverse=True):
            try:
                ckpt = read_checkpoint(path, self.device)
            except CheckpointError as error:
                warnings.warn(f'{error} Falling back to the previous checkpoint.', RuntimeWarning, stacklevel=2)
                if self.is_main:
                    print(f'WARNING: {error} Falling back to the previous checkpoint.', file=sys.stderr, flush=True)
                continue
            self.load_checkpoint(path, ckpt)
            return path
        return None

    # -------------------------------------------------------------------- loop
    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self._stop_signal = signum

    def _generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + step * 1009 + self.rank)

    def _loader(self) -> DataLoader:
        d = self.opt['datasets']['train']
        paths = list_images(d['dataroots'] if isinstance(d['dataroots'], list) else [d['dataroots']])
        if hasattr(self.task, 'make_dataset'):  # a task with its own samples (e.g. cached views)
            dataset = self.task.make_dataset(paths, self.out_dir, build=self.is_main,
                                             wait=dist.barrier if self.world > 1 else None)
            self.skipped_images = list(getattr(self.task, 'skipped_images', []))
            self.num_images = len(paths) - len(self.skipped_images)
        else:
            dataset = RandomCropDataset(paths, int(d['crop_size']), seed=self.seed,
                                        cache_images=bool(d.get('cache_images', True)))
            self.num_images = len(dataset.paths)
            self.skipped_images = list(dataset.skipped)
            if self.is_main and dataset.skipped:
                print(dataset.skip_summary(), file=sys.stderr, flush=True)
        batch = int(d['batch_size_per_gpu'])
        sampler = StepSampler(batch, self.step, self.total, self.rank, self.world)
        workers = int(d.get('num_worker_per_gpu', 0))
        return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                          pin_memory=self.device.type == 'cuda', persistent_workers=False,
                          prefetch_factor=2 if workers else None)

    def _all_agree(self) -> tuple[bool, list[float]]:
        """Parameter checksums of every rank (DDP keeps them identical)."""
        total = torch.stack([p.detach().double().sum() for p in self.task.parameters()]).sum().reshape(1)
        if self.world == 1:
            return True, [total.item()]
        gathered = [torch.zeros_like(total) for _ in range(self.world)]
        dist.all_gather(gathered, total.to(self.device) if self.device.type == 'cuda' else total)
        values = [g.item() for g in gathered]
        return all(v == values[0] for v in values), values

    def train(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train to ``train.total_iter`` (or stop, with a checkpoint, after ``stop_after`` steps of this run)."""
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        loader = self._loader()
        start_step, t0 = self.step, time.time()
        losses: list[float] = []
        data_wait = 0.0
        autocast = (torch.autocast('cuda', dtype=torch.bfloat16) if self.device.type == 'cuda'
                    else torch.autocast('cpu', enabled=False))
        bar = tqdm(total=self.total, initial=self.step, disable=not self.is_main, unit='step', dynamic_ncols=True)
        pairs_per_step = int(self.opt['datasets']['train']['batch_size_per_gpu']) * self.world
        interrupted = False
        self.task.train()
        t_wait = time.time()
        try:
            for crops in loader:
                data_wait += time.time() - t_wait
                crops = (crops.to(self.device, non_blocking=True) if torch.is_tensor(crops) else
                         {k: v.to(self.device, non_blocking=True) for k, v in crops.items()})
                with autocast:
                    loss, logs = self.module(crops, self._generator(self.step))
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f'Loss became {loss.item()} at step {self.step}; '
                                             'lower the learning rate or enable grad_clip.')
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_clip:
                    logs['grad_norm'] = float(torch.nn.utils.clip_grad_norm_(self.task.parameters(), self.grad_clip))
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                losses.append(logs['loss'])
                elapsed = time.time() - t0
                rate = (self.step - start_step) * pairs_per_step / max(elapsed, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", pairs_s=f'{rate:.1f}')
                if self.writer and (self.step % self.print_freq == 0 or self.step == self.total):
                    for k, v in logs.items():
                        self.writer.add_scalar(f'train/{k}', v, self.step)
                    self.writer.add_scalar('train/lr', self.scheduler.get_last_lr()[0], self.step)
                    self.writer.add_scalar('train/pairs_per_s', rate, self.step)
                if self.is_main and self.visual_freq and self.step % self.visual_freq == 0:
                    self.save_visual(crops)
                if self.step % self.ckpt_freq == 0:
                    self.save_checkpoint()
                stop = self._stop_signal is not None or (stop_after is not None
                                                         and self.step - start_step >= stop_after)
                if self.world > 1:  # every rank stops at the same step
                    flag = torch.tensor([float(stop)], device=self.device)
                    dist.all_reduce(flag)
                    stop = flag.item() > 0
                if stop:
                    interrupted = self.step < self.total
                    break
                t_wait = time.time()
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        ckpt = self.save_checkpoint() if (interrupted or self.step % self.ckpt_freq) else \
            find_latest_checkpoint(self.ckpt_dir)
        if interrupted and self.is_main and self._stop_signal is not None:
            print(f'Interrupted by signal {self._stop_signal}: checkpoint {ckpt} written at step {self.step}; '
                  'continue with --resume auto.', flush=True)
        agree, checksums = self._all_agree()
        seconds = time.time() - t0
        steps_run = self.step - start_step
        summary = {
            'steps': self.step, 'steps_this_run': steps_run,
            'loss_first': losses[0] if losses else None, 'loss_last': losses[-1] if losses else None,
            'loss_last_mean10': float(np.mean(losses[-10:])) if losses else None,
            'pairs_per_s': steps_run * pairs_per_step / seconds if steps_run else 0.0,
            'data_wait_share': data_wait / seconds if seconds > 0 else 0.0,
            'seconds': seconds, 'world_size': self.world, 'interrupted': interrupted,
            'ranks_agree': agree, 'param_checksums': checksums, 'checkpoint': ckpt,
            'losses': losses,
        }
        if self.writer:
            self.writer.close()
        return summary

    @torch.no_grad()
    def save_visual(self, crops: torch.Tensor) -> None:
        from torchvision.utils import save_image

        self.task.eval()
        grid = self.task.visualise(crops, self._generator(self.step + 7919))
        self.task.train()
        if grid is None:
            return
        folder = os.path.join(self.out_dir, 'visualization')
        os.makedirs(folder, exist_ok=True)
        save_image(grid, os.path.join(folder, f'step_{self.step:08d}.png'))
        if self.writer:
            self.writer.add_image('pretext/triplets', grid, self.step)

    def export(self, path: str, extra: dict[str, Any] | None = None) -> str | None:
        if not self.is_main:
            return None
        info = {
            'stage': 'pretext', 'task': self.opt.get('task', 'crossiqa_pretext'), 'name': self.opt.get('name'),
            'steps': self.step, 'train_images': getattr(self, 'num_images', None),
            'train_data': self.opt['datasets']['train']['dataroots'], 'options': to_plain(self.opt),
            'commit': _git_commit(), 'date': datetime.now(timezone.utc).isoformat(timespec='seconds'),
            'machine': f'{os.cpu_count()} CPU threads, torch {torch.__version__}, '
                       f'{"CUDA" if torch.cuda.is_available() else "no GPU"}',
            **(extra or {}),
        }
        return self.task.export(path, info)

    def close(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
