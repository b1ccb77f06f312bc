"""``crossiqa-pyiqa``: score images with the plugin's (or any pyiqa) metrics from the shell.

pyiqa's own ``pyiqa`` command checks the metric name against ``DEFAULT_CONFIGS``
before anything could load a plugin, so ``pyiqa crossiqa -t img.png`` cannot work
without patching pyiqa. This command mirrors its flags instead::

    crossiqa-pyiqa score -t PATH [-r REF] [-m crossiqa niqe ...] [--csv out.csv [--resume | --overwrite]] [--explain]
    crossiqa-pyiqa explain -t PATH --out DIR [-m crossiqa]
    crossiqa-pyiqa list
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

SKIMAGE_SAMPLES = ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry', 'retina')

#: Exit statuses (also in ``--help`` and the README).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WRITE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

SCORE_EPILOG = """\
defaults:
  -t          scikit-image's sample photos when no target is given
  -m          crossiqa (higher is better, CLIVE MOS scale)
  --device    cuda if a GPU is available, else cpu
  --reader    auto: the plugin's metrics read files with the plugin's reader (EXIF orientation,
              16-bit, alpha over white); pyiqa's own metrics with pyiqa's reader, exactly as
              pyiqa.create_metric(name)(path) does. 'plugin' or 'pyiqa' use one reader for all.
  --workers   images decoded ahead in parallel threads (default: min(4, CPU count))

folders: listed recursively (links followed, each file once) by extension, case-insensitive:
  .bmp .gif .jpeg .jpg .pgm .png .pnm .ppm .tif .tiff .webp. Every other file, every folder
  that cannot be read and every duplicate link is counted and named on stderr.

references (-r, full-reference metrics): a file is the reference of every target; a folder
  is matched by file name: the same relative path, else the same file name, else the same
  name without extension (unique). The CSV records the reference used.

--explain: the first -m metric (a CrossIQA metric: crossiqa, crossiqa-livec, crossiqa-zs, ...) also
  reports what is wrong with each image: columns blur, noise, compression, exposure,
  exposure_direction, contrast, colour (strengths in [0, 1]) and top_family, after the metrics.

CSV (--csv FILE): columns image[,reference],<metric>...,errors; one row per image, written and
  flushed as soon as it is scored (Ctrl-C keeps the rows). An existing FILE is refused unless
  --resume (keep its rows, score only the images not in it) or --overwrite is given; a FILE
  another run is writing is refused (an advisory lock); an image, an input (same inode, any
  name) or a folder is never overwritten. A write error (disk full, file-size limit) stops
  the run with one line; the rows written so far stay intact (no half row) for --resume.

exit status:
  0    every image scored by every metric
  1    some images or metrics failed (their cells are empty; the errors column says why),
       or some image files or folders could not be read or are of formats not read here
  2    usage error (bad option, path, metric, or --csv refused); nothing was scored
  3    the CSV could not be written; the rows written before are intact
  130  interrupted (Ctrl-C); the rows written before are intact
"""


class UsageError(Exception):
    """A bad option or path: one line on stderr, exit status 2, nothing scored."""


class CsvWriteError(Exception):
    """The CSV could not be written: one line on stderr, exit status 3."""


# ------------------------------------------------------------------------------ inputs
def _skimage_images() -> list[tuple[str, torch.Tensor]]:
    """scikit-image's bundled colour photographs: a folder to score on a fresh machine."""
    import skimage.data

    out = []
    for name in SKIMAGE_SAMPLES:
        load = getattr(skimage.data, name, None)
        if load is None:
            continue
        arr = load()
        if arr.ndim == 3 and arr.shape[2] == 3:
            out.append((f'skimage.data.{name}', torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float() / 255))
    return out


def _collect(target: str, what: str = 'target'):
    """``(items, scan)``: ``(label, path)`` of the images of a file or folder, and the folder scan (or None)."""
    from crossiqa_pyiqa.image_files import scan_folder

    if os.path.isdir(target):
        scan = scan_folder(target)
        if not scan.images:
            found = f' ({len(scan.skipped)} other file(s), {len(scan.unreadable)} unreadable path(s))' \
                if scan.skipped or scan.unreadable else ''
            raise UsageError(f'no image files found in {what} folder {target}{found}')
        return [(os.path.relpath(p, target), p) for p in scan.images], scan
    if not os.path.exists(target):
        raise UsageError(f'{what} not found: {target}')
    return [(target, target)], None


def _list_targets(target: str) -> list[tuple[str, str]]:
    """``(label, path)`` of the images to score: a file as given, a folder's images relative to it."""
    try:
        return _collect(target)[0]
    except UsageError as error:
        raise SystemExit(f'crossiqa-pyiqa: error: {error}')


def match_references(items: Sequence[tuple[str, Any]], ref: str) -> tuple[list[tuple[str, str] | None], Any]:
    """Each target's ``(reference label, reference path)`` by file name, or None when there is none."""
    refs, scan = _collect(ref, 'reference')
    if scan is None:  # one reference file for every target
        return [refs[0] for _ in items], None
    by_label = {label: (label, path) for label, path in refs}
    by_name: dict[str, list[tuple[str, str]]] = {}
    by_stem: dict[str, list[tuple[str, str]]] = {}
    for label, path in refs:
        by_name.setdefault(os.path.basename(label), []).append((label, path))
        by_stem.setdefault(os.path.splitext(os.path.basename(label))[0], []).append((label, path))
    out: list[tuple[str, str] | None] = []
    for label, _ in items:
        name = os.path.basename(label)
        if label in by_label:
            out.append(by_label[label])
        elif len(by_name.get(name, ())) == 1:
            out.append(by_name[name][0])
        elif len(by_stem.get(os.path.splitext(name)[0], ())) == 1:
            out.append(by_stem[os.path.splitext(name)[0]][0])
        else:
            out.append(None)
    return out, scan


def resolve_device(name: str | None) -> torch.device:
    """A usable torch device, or a one-line error (never a traceback)."""
    if name is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f'--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)')
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise UsageError(f'--device {name}: no CUDA GPU is available here; use --device cpu')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f'--device {name}: only {torch.cuda.device_count()} CUDA device(s) here')
    try:
        torch.empty(1, device=device)
    except Exception as error:  # mps without a GPU, xpu without a driver...
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f'--device {name} cannot be used: {message}')
    return device


# ------------------------------------------------------------------------------ output
def _is_image_content(path: str) -> bool:
    """Whether Pillow recognises the file's content as an image (whatever its name)."""
    from PIL import Image

    try:
        with Image.open(path):
            return True
    except Exception:  # not an image (or unreadable): not ours to protect here
        return False


def check_output(path: str, inputs: Sequence[str]) -> None:
    """Refuse a --csv path that cannot be written, or that is an input or another image (by inode and content)."""
    if os.path.isdir(path):
        raise UsageError(f'--csv {path} is a folder; give a file name')
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f'--csv {path}: {parent} is not an existing folder')
    if os.path.exists(path):
        st = os.stat(path)
        for p in inputs:
            try:
                other = os.stat(p)
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                raise UsageError(f'--csv {path} is one of the images to score ({p}, the same file); it would be '
                                 'overwritten. Choose another file name.')
        if _is_image_content(path):
            raise UsageError(f'--csv {path} is an existing image file; refusing to overwrite it')
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f'--csv {path} cannot be written (permission denied)')


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f'{type(error).__name__}: {text[0] if text else ""}'.rstrip(': ')


class CsvOutput:
    """The CSV, one complete row per write: locked against other runs, resumable, never a half row.

    Each row is encoded first and written with ``os.write`` (no buffering); if a write fails
    part-way (disk full, file-size limit) the file is cut back to the last complete row.
    """

    def __init__(self, path: str, fieldnames: list[str], resume: bool, overwrite: bool) -> None:
        self.path, self.fieldnames = path, fieldnames
        self.kept: list[dict[str, str]] = []
        self.dropped_partial = False
        existed = os.path.exists(path)
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UsageError(f'--csv {path}: {_one_line(error)}')
        locked = False
        try:
            self._lock()
            locked = True
            if existed and not (resume or overwrite):
                raise UsageError(f'--csv {path} already exists; pass --resume to keep its rows and score the other '
                                 'images, or --overwrite to replace it')
            if resume and existed:
                self._read_existing()
            else:
                self._truncate(0)
            if self._size() == 0:
                self._write(self._encode(dict(zip(fieldnames, fieldnames))))
        except BaseException:
            if locked and not existed and os.path.getsize(path) == 0:
                os.remove(path)  # created by this run, nothing in it
            os.close(self.fd)
            raise

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f'--csv {self.path} is being written by another crossiqa-pyiqa run (it holds the file\'s '
                             'lock); wait for it, or choose another file') from None

    def _size(self) -> int:
        return os.fstat(self.fd).st_size

    def _truncate(self, size: int) -> None:
        try:
            os.ftruncate(self.fd, size)
        except OSError:  # not a regular file (a device, a pipe): nothing to cut
            pass
        os.lseek(self.fd, size, os.SEEK_SET)

    def _read_existing(self) -> None:
        size = self._size()
        os.lseek(self.fd, 0, os.SEEK_SET)
        data = b''
        while len(data) < size:
            chunk = os.read(self.fd, size - len(data))
            if not chunk:
                break
            data += chunk
        if data and not data.endswith(b'\n'):  # a row cut by a crash: drop it, its image is scored again
            data = data[:data.rfind(b'\n') + 1]
            self.dropped_partial = True
        try:
            text = data.decode('utf-8')
        except UnicodeDecodeError:
            raise UsageError(f'--resume: {self.path} is not a CSV written by crossiqa-pyiqa (not UTF-8 text)') from None
        rows = list(csv.reader(io.StringIO(text, newline='')))
        if rows:
            if rows[0] != self.fieldnames:
                raise UsageError(f'--resume: {self.path} has the columns {",".join(rows[0])[:200]}; this run writes '
                                 f'{",".join(self.fieldnames)} (the same -m metrics, and -r, are needed to resume); '
                                 'use --overwrite or another file')
            for values in rows[1:]:
                if len(values) != len(self.fieldnames):
                    raise UsageError(f'--resume: {self.path} has a row with {len(values)} cells, expected '
                                     f'{len(self.fieldnames)}; use --overwrite or another file')
                self.kept.append(dict(zip(self.fieldnames, values)))
        self._truncate(len(data))

    def _encode(self, row: dict[str, Any]) -> bytes:
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.fieldnames, lineterminator='\n').writerow(row)
        return buf.getvalue().encode('utf-8')

    def _write(self, data: bytes) -> None:
        start = os.lseek(self.fd, 0, os.SEEK_CUR)
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as error:
            self._truncate(start)  # no half row: the file ends with the last complete one
            raise CsvWriteError(f'writing --csv {self.path} failed: {_one_line(error)}') from error

    def write_row(self, row: dict[str, Any]) -> None:
        self._write(self._encode(row))

    def close(self) -> None:
        try:
            os.close(self.fd)  # also releases the lock
        except OSError:
            pass


# ------------------------------------------------------------------------------ reading
def _plugin_metric(metric: Any) -> bool:
    from crossiqa_pyiqa.inputs import _BatchedTensorReader

    return isinstance(getattr(metric, '__dict__', {}).get('_to_batched_tensor'), _BatchedTensorReader)


def _readers(kinds: set[str]) -> dict[str, Callable[[str], torch.Tensor]]:
    from pyiqa.utils.img_util import imread2tensor

    from crossiqa_pyiqa.inputs import read_image

    def pyiqa_reader(path: str) -> torch.Tensor:  # what InferenceModel._to_batched_tensor does with a path
        if not os.path.exists(path):
            raise FileNotFoundError(f'Image file not found: {path}')
        return imread2tensor(path, rgb=True).unsqueeze(0)

    table = {'plugin': lambda path: read_image(path)[None], 'pyiqa': pyiqa_reader}
    return {k: table[k] for k in kinds}


def _decoded(items: Sequence[tuple[str, Any, tuple[str, str] | None]], readers: dict[str, Callable],
             workers: int) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """For each item, in order: ``({kind: tensor or exception}, {kind: reference tensor or exception})``,
    decoded ``workers`` images ahead in threads (Pillow and numpy release the GIL)."""

    def load(source: Any, ref: tuple[str, str] | None):
        out, ref_out = {}, {}
        for kind, read in readers.items():
            try:
                out[kind] = source if torch.is_tensor(source) else read(source)
            except Exception as error:  # noqa: BLE001  (one unreadable file must not end the run)
                out[kind] = error
            if ref is not None:
                try:
                    ref_out[kind] = read(ref[1])
                except Exception as error:  # noqa: BLE001
                    ref_out[kind] = error
        return out, ref_out

    if workers <= 1:
        for _, source, ref in items:
            yield load(source, ref)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        it = iter(items)
        for _ in range(2 * workers):
            nxt = next(it, None)
            if nxt is None:
                break
            pending.append(pool.submit(load, nxt[1], nxt[2]))
        while pending:
            result = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt[1], nxt[2]))
            yield result


# ------------------------------------------------------------------------------ printing
class _Stdout:
    """stdout that survives a closed pipe (``| head``): the rest of the table is dropped, no traceback."""

    closed = False

    @classmethod
    def print(cls, text: str) -> None:
        if cls.closed:
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:
            cls.closed = True
            try:  # later writes (and the interpreter's final flush) go nowhere
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass


def _warn(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass


# ------------------------------------------------------------------------------ scoring
def score_command(args: argparse.Namespace) -> int:
    import pyiqa

    import crossiqa_pyiqa  # noqa: F401  (registers the plugin's metrics)

    if args.resume and args.overwrite:
        raise UsageError('--resume and --overwrite exclude each other')
    if (args.resume or args.overwrite) and not args.csv:
        raise UsageError('--resume and --overwrite apply to --csv FILE')
    if args.workers is not None and args.workers < 0:
        raise UsageError('--workers must be >= 0')
    device = resolve_device(args.device)
    for name in args.metric:
        if name not in pyiqa.list_models():
            raise UsageError(f'unknown metric {name!r}; see `crossiqa-pyiqa list`.')
    scans = []
    if args.target is None:
        if args.ref is not None:
            raise UsageError('-r REF needs -t TARGET (references are matched to the targets by file name)')
        items: list[tuple[str, Any]] = _skimage_images()
        _warn(f'No target given: scoring {len(items)} images that ship with scikit-image.')
    else:
        items, scan = _collect(args.target)
        scans.append(scan)
    refs: list[tuple[str, str] | None] = [None] * len(items)
    if args.ref is not None:
        refs, ref_scan = match_references(items, args.ref)
        scans.append(ref_scan)
        if not any(refs):
            raise UsageError(f'no reference in {args.ref} has the file name of a target image (references are '
                             'matched by relative path, file name, or name without extension)')
    explain_columns: tuple[str, ...] = ()
    if args.explain:
        explain_columns = _explain_columns(args.metric[0])
    fieldnames = ['image', *(['reference'] if args.ref is not None else []), *args.metric, *explain_columns, 'errors']
    inputs = [s for _, s in items if isinstance(s, str)] + [r[1] for r in refs if r is not None]
    out = None
    if args.csv:  # before any metric is built or image scored: a bad path never costs the results
        check_output(args.csv, inputs)
        out = CsvOutput(args.csv, fieldnames, args.resume, args.overwrite)
    try:
        return _score(args, pyiqa, device, items, refs, scans, fieldnames, out)
    finally:
        if out is not None:
            out.close()


def _score(args, pyiqa, device, items, refs, scans, fieldnames, out: CsvOutput | None) -> int:
    metrics = {}
    for name in args.metric:
        try:
            metrics[name] = pyiqa.create_metric(name, device=device)
        except Exception as error:
            raise UsageError(f'metric {name!r} cannot be built: {_one_line(error)}')
    kind_of = {name: ('plugin' if _plugin_metric(m) else 'pyiqa') if args.reader == 'auto' else args.reader
               for name, m in metrics.items()}
    explainer = _explainer(metrics[args.metric[0]], args.metric[0]) if getattr(args, 'explain', False) else None
    readers = _readers(set(kind_of.values()))

    problems = []  # skipped and unreadable paths: counted and named
    for scan in scans:
        if scan is not None:
            for line in scan.report_lines():
                _warn(line)
            problems += [p for p, _ in scan.unreadable] + scan.unsupported

    rows: list[dict[str, Any]] = []
    if out is not None and out.kept:
        done = set()
        for kept in out.kept:
            row: dict[str, Any] = dict(kept)
            for name in metrics:
                try:
                    row[name] = float(kept[name])
                except ValueError:
                    row.pop(name)
            rows.append(row)
            done.add(kept['image'])
        todo = [i for i, (label, _) in enumerate(items) if label not in done]
        _warn(f'--resume: kept {len(out.kept)} row(s) of {args.csv}; {len(todo)} of {len(items)} image(s) left '
              'to score' + ('; a cut last row was dropped and its image is scored again' if out.dropped_partial else ''))
    else:
        todo = list(range(len(items)))
        if out is not None and out.dropped_partial:
            _warn(f'--resume: a cut last row of {args.csv} was dropped')

    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    work = [(items[i][0], items[i][1], refs[i]) for i in todo]
    from tqdm import tqdm

    failures: list[tuple[str, str, str]] = []
    for row in rows:  # failures kept from the resumed CSV count too
        if row.get('errors'):
            failures.append((row['image'], 'resumed', row['errors']))
    scored, interrupted, write_error = 0, False, None
    try:
        progress = tqdm(total=len(work), unit='image', desc='scoring', disable=args.quiet)
        for (label, _, ref), (xs, ref_xs) in zip(work, _decoded(work, readers, workers)):
            row = {'image': label}
            if args.ref is not None:
                row['reference'] = ref[0] if ref is not None else ''
            errors: dict[str, str] = {}
            for name, metric in metrics.items():
                kind = kind_of[name]
                try:
                    x = xs[kind]
                    if isinstance(x, Exception):
                        raise x
                    if explainer is not None and name == args.metric[0]:
                        found = explainer(x)  # one pass: the metric's score and the family strengths
                        row[name] = found.score
                        row.update(found.row())
                        continue
                    if metric.metric_mode == 'FR':
                        if args.ref is None:
                            raise ValueError(f'{name} is a full-reference metric: pass -r REF')
                        if ref is None:
                            raise FileNotFoundError(f'no reference with the file name of {label} in {args.ref}')
                        r = ref_xs[kind]
                        if isinstance(r, Exception):
                            raise r
                        value = metric(x, r)
                    else:
                        value = metric(x)
                    row[name] = float(value.reshape(-1)[0].item())
                except Exception as error:  # one metric failing keeps the others' scores
                    errors[name] = _one_line(error)
            row['errors'] = '; '.join(f'{k}: {v}' for k, v in errors.items())
            failures.extend((label, k, v) for k, v in errors.items())
            rows.append(row)
            scored += 1
            progress.update(1)
            if out is not None:
                out.write_row(row)
        progress.close()
    except KeyboardInterrupt:
        interrupted = True
    except CsvWriteError as error:
        write_error = error
        rows.pop()  # that row is not in the file

    first = args.metric[0]
    lower = metrics[first].lower_better
    ranked = sorted((r for r in rows if first in r), key=lambda r: r[first], reverse=not lower)
    ordered = ranked + [r for r in rows if first not in r]
    width = max([len(str(r['image'])) for r in rows] + [5])
    explained = explainer is not None
    header = f"{'rank':>4}  {'image':<{width}}  " + '  '.join(f'{m:>14}' for m in args.metric) \
        + ('  top family' if explained else '')
    _Stdout.print(header)
    _Stdout.print('-' * len(header))
    for k, r in enumerate(ordered, 1):
        cells = [f'{r[m]:>14.4f}' if m in r else f"{'FAILED':>14}" for m in args.metric]
        if explained and r.get('top_family'):
            top = r['top_family']
            cells.append(f"{top}{' (' + r['exposure_direction'] + ')' if top == 'exposure' else ''} {r[top]}")
        _Stdout.print(f"{k if first in r else '-':>4}  {str(r['image']):<{width}}  " + '  '.join(cells))
    _Stdout.print(f"(sorted best first by {first}; {'lower' if lower else 'higher'} is better)")
    if out is not None and write_error is None:
        _Stdout.print(f'Wrote {len(rows)} rows to {args.csv} (one per image as it was scored)')
    for label, name, message in failures:
        if name != 'resumed':
            _warn(f'FAILED {label} [{name}]: {message}')
    if write_error is not None:
        kept = len(rows)
        _warn(f'crossiqa-pyiqa: error: {write_error}; the {kept} row(s) before it are intact in {args.csv} '
              f'({len(items) - kept} image(s) not written; free space, then run again with --resume)')
        return EXIT_WRITE
    if interrupted:
        _warn(f'Interrupted after {len(rows)} of {len(items)} images' + (f'; their rows are in {args.csv} '
                                                                         '(--resume continues)' if out else '') + '.')
        return EXIT_INTERRUPTED
    if failures:
        bad = len({label for label, _, _ in failures})
        _warn(f'{len(failures)} score(s) failed on {bad} of {len(items)} images (other metrics kept).')
    if problems:
        _warn(f'{len(problems)} path(s) could not be read or are of formats not read here (named above).')
    return EXIT_FAILED if failures or problems else EXIT_OK


def _explain_columns(name: str) -> tuple[str, ...]:
    """The CSV columns ``--explain`` adds, or a usage error when ``name`` is not a CrossIQA metric."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    import crossiqa_pyiqa  # noqa: F401  (registers the plugin's metrics)
    from crossiqa_pyiqa.explanation import ROW_COLUMNS

    if DEFAULT_CONFIGS.get(name, {}).get('metric_opts', {}).get('type') != 'CrossIQA':
        raise UsageError(f'--explain needs a CrossIQA metric first in -m (crossiqa, crossiqa-livec, crossiqa-zs, or '
                         f'a fitted crossiqa-<name>); {name!r} is not one')
    return ROW_COLUMNS


def _explainer(metric: Any, name: str) -> Callable[[torch.Tensor], Any]:
    """``explain`` bound to a built metric, after checking that its weight file holds diagnosis heads."""
    from crossiqa_pyiqa.explanation import explain, resolve_network

    try:
        net, _ = resolve_network(metric)
        net.require_diagnosis()
    except (ValueError, RuntimeError) as error:
        raise UsageError(f'{name}: {error}')
    return lambda x: explain(x, metric, quality_map=False)


# ------------------------------------------------------------------------------ explaining
EXPLAIN_EPILOG = """\
per image: DIR/<path relative to the target, extension kept>.png (photo.jpg -> DIR/photo.jpg.png), three panels:
  the photo; its quality map over it (cells of 32 px, windows of 96 px; red: worse than the score,
  green: better; the colour bar is in the metric's units and the map's mean is the score); the
  strengths in [0, 1] of blur, noise, compression, exposure (dark / bright), contrast (low / high),
  colour (faded / vivid / cast).
  A table on stdout: score, top family, its strength. Folders are listed as by `score`.

exit status:
  0    every image explained
  1    some images failed (named on stderr), or some files/folders could not be read
  2    usage error (bad option, path, metric, or the metric's weight file has no diagnosis heads)
  130  interrupted (Ctrl-C); the pictures written before are kept
"""


def explain_command(args: argparse.Namespace) -> int:
    import pyiqa

    import crossiqa_pyiqa  # noqa: F401  (registers the plugin's metrics)

    device = resolve_device(args.device)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f'--out {args.out} is a file; give a folder (it is created if missing)')
    if args.window < 1 or args.window % 2 == 0:
        raise UsageError(f'--window must be an odd number of cells (1, 3, 5, ...), got {args.window}')
    _explain_columns(args.metric)
    scans = []
    if args.target is None:
        items: list[tuple[str, Any]] = _skimage_images()
        _warn(f'No target given: explaining {len(items)} images that ship with scikit-image.')
    else:
        items, scan = _collect(args.target)
        scans.append(scan)
        if scan is None:  # one file: its name
            items = [(os.path.basename(items[0][0]), items[0][1])]
    inputs = {os.path.realpath(s) for _, s in items if isinstance(s, str)}
    try:
        metric = pyiqa.create_metric(args.metric, device=device)
    except Exception as error:
        raise UsageError(f'metric {args.metric!r} cannot be built: {_one_line(error)}')
    _explainer(metric, args.metric)  # no diagnosis heads: a usage error naming the fit command
    from crossiqa_pyiqa.explain_figure import render
    from crossiqa_pyiqa.explanation import explain

    problems = []
    for scan in scans:
        if scan is not None:
            for line in scan.report_lines():
                _warn(line)
            problems += [p for p, _ in scan.unreadable] + scan.unsupported
    readers = _readers({'plugin'})
    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    work = [(label, source, None) for label, source in items]
    from tqdm import tqdm

    failures: list[tuple[str, str]] = []
    done: list[tuple[str, Any, str]] = []
    interrupted = False
    try:
        progress = tqdm(total=len(work), unit='image', desc='explaining', disable=args.quiet)
        for (label, _, _), (xs, _) in zip(work, _decoded(work, readers, workers)):
            try:
                x = xs['plugin']
                if isinstance(x, Exception):
                    raise x
                found = explain(x, metric, window=args.window)
                target = os.path.join(args.out, label + '.png')
                if os.path.realpath(target) in inputs:
                    raise FileExistsError(f'{target} is one of the images to explain; not overwritten')
                render(found, x, f'{label}: {args.metric} {found.score:.2f}', target)
                done.append((label, found, target))
            except Exception as error:  # one image failing keeps the others
                failures.append((label, _one_line(error)))
            progress.update(1)
        progress.close()
    except KeyboardInterrupt:
        interrupted = True
    width = max([len(label) for label, _, _ in done] + [5])
    header = f"{'image':<{width}}  {args.metric:>10}  {'top family':<22}  strength"
    _Stdout.print(header)
    _Stdout.print('-' * len(header))
    for label, found, _ in done:
        top = found.top_family
        name = (f'exposure ({found.exposure_direction})' if top == 'exposure' else top) if top else '-'
        _Stdout.print(f'{label:<{width}}  {found.score:>10.2f}  {name:<22}  '
                      + (f'{found.families[top]:.2f}' if top else '-'))
    _Stdout.print(f'Wrote {len(done)} picture(s) to {args.out}')
    for label, message in failures:
        _warn(f'FAILED {label}: {message}')
    if interrupted:
        _warn(f'Interrupted after {len(done)} of {len(items)} images; their pictures are in {args.out}.')
        return EXIT_INTERRUPTED
    if problems:
        _warn(f'{len(problems)} path(s) could not be read or are of formats not read here (named above).')
    return EXIT_FAILED if failures or problems else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='crossiqa-pyiqa', description=__doc__, epilog=SCORE_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    s = sub.add_parser('score', help='score an image or a folder (default: scikit-image sample photos)',
                       description='Score images with pyiqa metrics: a table sorted best first, optionally a CSV.',
                       epilog=SCORE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument('-t', '--target', help='image file or folder (recursive); default: scikit-image sample photos')
    s.add_argument('-r', '--ref', help='reference image or folder for full-reference metrics (matched by file name)')
    s.add_argument('-m', '--metric', nargs='+', default=['crossiqa'], help='pyiqa metric name(s) (default: crossiqa)')
    s.add_argument('--csv', help='write the scores to this CSV file, one row per image as it is scored')
    s.add_argument('--resume', action='store_true', help='keep the rows of an existing --csv, score the other images')
    s.add_argument('--overwrite', action='store_true', help='replace an existing --csv')
    s.add_argument('--reader', choices=('auto', 'plugin', 'pyiqa'), default='auto',
                   help="how files are decoded (default auto: plugin metrics with the plugin's reader, "
                        "pyiqa metrics with pyiqa's)")
    s.add_argument('--workers', type=int, default=None, help='decoding threads (default min(4, CPUs); 0: none)')
    s.add_argument('--device', default=None, help='cpu, cuda, … (default: cuda if available)')
    s.add_argument('-q', '--quiet', action='store_true', help='no progress bar')
    s.add_argument('--explain', action='store_true',
                   help='add the family strengths of the first metric (a CrossIQA metric) to the table and CSV')
    e = sub.add_parser('explain', help='what is wrong with each image, and where: one picture per image',
                       description='Explain scores: per image, a PNG with the photo, its quality map and the family '
                                   'strengths (blur, noise, compression, exposure, contrast, colour).',
                       epilog=EXPLAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument('-t', '--target', help='image file or folder (recursive); default: scikit-image sample photos')
    e.add_argument('--out', required=True, help='folder for the pictures (created if missing)')
    e.add_argument('-m', '--metric', default='crossiqa', help='a CrossIQA metric with diagnosis heads (default crossiqa)')
    e.add_argument('--window', type=int, default=3, help='map window side in cells of 32 px (odd; default 3: 96 px)')
    e.add_argument('--workers', type=int, default=None, help='decoding threads (default min(4, CPUs); 0: none)')
    e.add_argument('--device', default=None, help='cpu, cuda, … (default: cuda if available)')
    e.add_argument('-q', '--quiet', action='store_true', help='no progress bar')
    sub.add_parser('list', help="list the plugin's metrics")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse's own usage errors exit with 2
    try:
        if args.command == 'list':
            import pyiqa

            import crossiqa_pyiqa  # noqa: F401

            for name in pyiqa.list_models(filter=['crossiqa*', 'grepq*']):
                _Stdout.print(name)
            return EXIT_OK
        if args.command == 'explain':
            return explain_command(args)
        return score_command(args)
    except UsageError as error:
        _warn(f'crossiqa-pyiqa: error: {error}')
        return EXIT_USAGE
    except KeyboardInterrupt:
        _warn('Interrupted before scoring started.')
        return EXIT_INTERRUPTED


if __name__ == '__main__':
    sys.exit(main())
