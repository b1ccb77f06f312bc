"""The CLI keeps every result and says what it did (issue 20).

Real runs of ``python -m crossiqa_pyiqa.cli`` on images written here: a CSV another run
holds, resuming after an interrupted or failed run, same-file checks by inode and
content, a write error under a real file-size limit, unreadable folders, a closed stdout
pipe, exit codes, pyiqa's own reader for pyiqa's metrics, references matched by name.
"""
from __future__ import annotations

import csv
import ctypes
import os
import resource
import subprocess
import sys
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import crossiqa_pyiqa  # noqa: E402,F401
import pyiqa  # noqa: E402
from crossiqa_pyiqa.archs.crossiqa_arch import DEFAULT_WEIGHTS, default_weight_path  # noqa: E402

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
needs_weights = pytest.mark.skipif(not os.path.exists(default_weight_path(DEFAULT_WEIGHTS)),
                                   reason='no trained weights in this checkout')


def cli(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'crossiqa_pyiqa.cli', 'score', '-q', '--device', 'cpu', *args],
                          capture_output=True, text=True, timeout=timeout, env=ENV, **kwargs)


def images(folder: Path, n: int, size: int = 96) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = ('astronaut', 'coffee', 'chelsea', 'rocket')
    for i in range(n):
        arr = getattr(skimage.data, names[i % 4])()[8 * i:8 * i + size, :size]
        Image.fromarray(np.ascontiguousarray(arr)).save(folder / f'img{i:02d}.png')
    return folder


def rows_of(path: Path) -> list[dict]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


# ======================================================================== the CSV file
@needs_weights
def test_existing_csv_needs_resume_or_overwrite_and_resume_scores_the_rest(tmp_path):
    folder = images(tmp_path / 'imgs', 2)
    out = tmp_path / 'out.csv'
    first = cli('-t', str(folder), '--csv', str(out))
    assert first.returncode == 0, first.stderr
    done = out.read_bytes()
    # an existing CSV is refused (exit 2), untouched
    again = cli('-t', str(folder), '--csv', str(out))
    assert again.returncode == 2 and '--resume' in again.stderr and 'Traceback' not in again.stderr
    assert out.read_bytes() == done
    # more images and a row cut by a crash: --resume keeps the complete rows, scores the rest once
    images(folder, 4)
    with open(out, 'ab') as f:
        f.write(b'img02.png,12.3')
    resumed = cli('-t', str(folder), '--csv', str(out), '--resume')
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes().startswith(done)  # kept rows byte for byte
    rows = rows_of(out)
    assert [r['image'] for r in rows] == ['img00.png', 'img01.png', 'img02.png', 'img03.png']
    assert all(float(r['crossiqa']) and not r['errors'] for r in rows)
    assert 'kept 2 row(s)' in resumed.stderr and '2 of 4 image(s) left' in resumed.stderr
    # other metrics than the file's columns: refused, not mixed
    other = cli('-t', str(folder), '--csv', str(out), '--resume', '-m', 'crossiqa-zs')
    assert other.returncode == 2 and 'columns' in other.stderr
    # --overwrite replaces it
    over = cli('-t', str(folder / 'img03.png'), '--csv', str(out), '--overwrite')
    assert over.returncode == 0 and len(rows_of(out)) == 1


@needs_weights
def test_a_csv_another_run_is_writing_is_refused(tmp_path):
    import fcntl

    folder = images(tmp_path / 'imgs', 2)
    out = tmp_path / 'out.csv'
    assert cli('-t', str(folder), '--csv', str(out)).returncode == 0
    before = out.read_bytes()
    # a second crossiqa-pyiqa run holds the file's lock exactly like this (flock on the CSV)
    holder = subprocess.Popen([sys.executable, '-c', (
        'import fcntl, os, sys, time\n'
        f'fd = os.open({str(out)!r}, os.O_RDWR)\n'
        'fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n'
        'print("locked", flush=True)\n'
        'time.sleep(120)\n')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        # a plain second run onto it (bf77cb4: rewrote the file under the other run, exit 0)
        res = cli('-t', str(folder / 'img01.png'), '--csv', str(out))
        assert out.read_bytes() == before, 'a second run rewrote the CSV another run holds'
        assert res.returncode == 2 and 'being written by another' in res.stderr, (res.returncode, res.stderr)
        for flag in ('--overwrite', '--resume'):
            res = cli('-t', str(folder), '--csv', str(out), flag)
            assert res.returncode == 2 and 'being written by another' in res.stderr, res.stderr
            assert out.read_bytes() == before and b'\x00' not in out.read_bytes()
    finally:
        holder.kill()
        holder.wait()
    fd = os.open(out, os.O_RDWR)  # the lock is the file's: released with the run that held it
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)


@needs_weights
def test_csv_is_checked_by_inode_and_content_not_by_name(tmp_path):
    folder = images(tmp_path / 'imgs', 2)
    img = folder / 'img00.png'
    before = img.read_bytes()
    link = tmp_path / 'scores.csv'
    os.link(img, link)  # a hard link to an input, with a CSV name
    plain = tmp_path / 'photo'  # an image with no extension (not an input)
    plain.write_bytes(before)
    overwritten, codes = [], []
    for target in (link, plain):  # as a user would first try it (bf77cb4: the image overwritten, exit 0)
        codes.append(cli('-t', str(folder), '--csv', str(target)).returncode)
        if img.read_bytes() != before or plain.read_bytes() != before:
            overwritten.append(target.name)
            img.write_bytes(before)
            plain.write_bytes(before)
    assert not overwritten and codes == [2, 2], (f'--csv overwrote the image: {overwritten}', codes)
    res = cli('-t', str(folder), '--csv', str(link), '--overwrite')
    assert res.returncode == 2 and 'one of the images to score' in res.stderr and 'rank' not in res.stdout
    # the image with no extension: its content says it is an image
    res = cli('-t', str(folder), '--csv', str(plain), '--overwrite')
    assert res.returncode == 2 and 'existing image file' in res.stderr
    assert img.read_bytes() == before and plain.read_bytes() == before


@needs_weights
def test_write_error_ends_with_one_line_intact_rows_and_exit_3(tmp_path):
    folder = images(tmp_path / 'imgs', 5)
    out = tmp_path / 'out.csv'
    limit = 90  # header (22 bytes) and two or three rows fit; then a real EFBIG from the kernel

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = cli('-t', str(folder), '--csv', str(out), preexec_fn=small_files)
    assert res.returncode == 3, (res.returncode, res.stderr[-2000:])
    assert 'Traceback' not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith('crossiqa-pyiqa: error:')]
    assert len(errors) == 1 and 'writing --csv' in errors[0] and 'intact' in errors[0]
    data = out.read_bytes()
    assert data.endswith(b'\n') and len(data) <= limit  # no half row
    rows = rows_of(out)
    assert 1 <= len(rows) < 5 and all(float(r['crossiqa']) for r in rows)
    # the rows written are what --resume continues from
    res = cli('-t', str(folder), '--csv', str(out), '--resume')
    assert res.returncode == 0 and [r['image'] for r in rows_of(out)] == [f'img{i:02d}.png' for i in range(5)]


# ==================================================================== folders and files
def _without_dac_override():
    """Root reads any folder; drop that capability (from the bounding set, effective after exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), 'prctl(PR_CAPBSET_DROP)')


@needs_weights
def test_unreadable_folders_and_broken_links_are_counted_and_named(tmp_path):
    folder = images(tmp_path / 'imgs', 2)
    locked = folder / 'private'
    images(locked, 1)
    os.symlink(tmp_path / 'gone.png', folder / 'dangling.png')
    locked.chmod(0)
    try:
        res = cli('-t', str(folder), preexec_fn=_without_dac_override if os.geteuid() == 0 else None)
    finally:
        locked.chmod(0o755)
    assert res.returncode == 1, res.stderr  # not everything could be scored
    err = res.stderr
    assert 'private (Permission denied)' in err and 'dangling.png (broken symbolic link)' in err
    assert 'Traceback' not in err
    scored = [line.split()[1] for line in res.stdout.splitlines()[2:] if line.split() and line.split()[0].isdigit()]
    assert sorted(scored) == ['img00.png', 'img01.png']


@needs_weights
def test_files_outside_the_allow_list_are_not_read_but_counted_and_named(tmp_path):
    folder = images(tmp_path / 'imgs', 2)
    (folder / 'notes.txt').write_text('not an image')
    (folder / 'holiday.heic').write_bytes(b'\x00\x00\x00\x18ftypheic')
    (folder / 'figure.eps').write_bytes(b'%!PS-Adobe-3.0 EPSF-3.0\n')  # Pillow would run Ghostscript on it
    (folder / 'data.h5').write_bytes(b'\x89HDF\r\n\x1a\n')
    res = cli('-t', str(folder))
    err = res.stderr
    # not handed to Pillow at all (bf77cb4: .eps and .h5 were read, failing rows in the table; .heic unnamed)
    assert 'figure.eps' not in res.stdout and 'data.h5' not in res.stdout, res.stdout
    for name in ('holiday.heic', 'figure.eps', 'data.h5', 'notes.txt'):
        assert any(name in line and 'skipped' in line for line in err.splitlines()), (name, err)
    assert 'Traceback' not in err and 'FAILED' not in err
    scored = [line.split()[1] for line in res.stdout.splitlines()[2:] if line.split() and line.split()[0].isdigit()]
    assert sorted(scored) == ['img00.png', 'img01.png']


def test_training_uses_the_same_allow_list(tmp_path, capsys):
    from crossiqa_pyiqa.train.data import list_images

    folder = images(tmp_path / 'imgs', 2)
    Image.open(folder / 'img00.png').save(folder / 'c.webp')
    (folder / 'figure.eps').write_bytes(b'%!PS-Adobe-3.0 EPSF-3.0\n')
    (folder / 'holiday.HEIC').write_bytes(b'\x00')
    found = list_images([str(folder)])
    assert [os.path.basename(p) for p in found] == ['c.webp', 'img00.png', 'img01.png']
    err = capsys.readouterr().err
    assert 'figure.eps' in err and 'holiday.HEIC' in err
    from crossiqa_pyiqa.image_files import IMAGE_EXTENSIONS

    assert '.webp' in IMAGE_EXTENSIONS and '.eps' not in IMAGE_EXTENSIONS


@needs_weights
def test_missing_target_file_is_a_usage_error_and_missing_image_a_file_not_found(tmp_path):
    res = cli('-t', str(tmp_path / 'nope.jpg'))
    assert res.returncode == 2 and 'not found' in res.stderr and 'Traceback' not in res.stderr


# ========================================================================== the output
@needs_weights
def test_closed_stdout_pipe_is_not_a_traceback(tmp_path):
    folder = images(tmp_path / 'imgs', 3)
    proc = subprocess.Popen([sys.executable, '-m', 'crossiqa_pyiqa.cli', 'score', '-q', '--device', 'cpu', '-t',
                             str(folder), '--csv', str(tmp_path / 'o.csv')],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    proc.stdout.close()  # like `| head` that has already exited
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert 'Traceback' not in err and 'BrokenPipeError' not in err, err
    assert proc.returncode == 0 and len(rows_of(tmp_path / 'o.csv')) == 3
    shell = subprocess.run(f'{sys.executable} -m crossiqa_pyiqa.cli score -q --device cpu -t {folder} | head -n 1',
                           shell=True, capture_output=True, text=True, env=ENV, timeout=300)
    assert 'Traceback' not in shell.stderr and shell.stdout.startswith('rank')


def test_help_describes_defaults_exit_codes_and_the_csv():
    help_text = subprocess.run([sys.executable, '-m', 'crossiqa_pyiqa.cli', 'score', '--help'], capture_output=True,
                               text=True, env=ENV, timeout=120).stdout
    for words in ('exit status', '0 ', '1 ', '2 ', '3 ', 'usage error', '--resume', '--overwrite', 'defaults',
                  'cuda if a GPU', 'CSV', '--reader', 'matched by file name', '.webp'):
        assert words in help_text, words


def test_usage_errors_exit_2():
    assert cli('--metric', 'no-such-metric').returncode == 2  # bf77cb4: 1, like a failed score
    assert cli('--no-such-flag').returncode == 2
    assert cli('--resume').returncode == 2  # --resume without --csv


@needs_weights
def test_failed_image_is_exit_1_and_all_scored_exit_0(tmp_path):
    folder = images(tmp_path / 'imgs', 2)
    assert cli('-t', str(folder)).returncode == 0
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'0' * 40)
    res = cli('-t', str(folder))
    assert res.returncode == 1 and 'FAILED broken.png' in res.stderr


# ===================================================================== readers and refs
def _exif_alpha_image(path: Path) -> None:
    arr = skimage.data.chelsea()[:160, :200]
    rgba = np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])
    rgba[:40, :, 3] = 0
    rgba[:40, :, :3] = 0
    img = Image.fromarray(rgba, 'RGBA').transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif)


def test_pyiqa_metrics_read_files_with_pyiqas_reader_unless_asked(tmp_path):
    from crossiqa_pyiqa.inputs import read_image

    path = tmp_path / 'rot_alpha.png'
    _exif_alpha_image(path)
    brisque = pyiqa.create_metric('brisque', device='cpu')
    own = brisque(str(path)).item()  # pyiqa: no EXIF orientation, alpha dropped
    plugin = brisque(read_image(path)[None]).item()
    assert abs(own - plugin) > 0.5  # the readers differ on this file
    out = tmp_path / 'o.csv'
    res = cli('-t', str(path), '-m', 'brisque', '--csv', str(out))
    assert res.returncode == 0, res.stderr
    assert float(rows_of(out)[0]['brisque']) == pytest.approx(own, abs=1e-4)
    res = cli('-t', str(path), '-m', 'brisque', '--csv', str(out), '--overwrite', '--reader', 'plugin')
    assert float(rows_of(out)[0]['brisque']) == pytest.approx(plugin, abs=1e-4)


def test_references_are_matched_by_file_name_and_recorded(tmp_path):
    rng = np.random.default_rng(0)
    dist, refs = tmp_path / 'dist', tmp_path / 'refs'
    dist.mkdir()
    refs.mkdir()
    base = {'a': skimage.data.coffee()[:96, :96], 'b': skimage.data.chelsea()[:96, :96]}
    for name, arr in base.items():  # targets: a.png, b.png with different noise levels
        noisy = np.clip(arr + rng.normal(0, 4 if name == 'a' else 20, arr.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(dist / f'{name}.png')
    Image.fromarray(base['a']).save(refs / 'a.bmp')  # other extension: matched by name without it
    Image.fromarray(base['b']).save(refs / 'b.png')
    Image.fromarray(base['a']).save(refs / '0_extra.png')  # sorts first: position pairing would be wrong
    out = tmp_path / 'o.csv'
    res = cli('-t', str(dist), '-r', str(refs), '-m', 'psnr', '--csv', str(out))
    assert res.returncode == 0, res.stderr
    rows = {r['image']: r for r in rows_of(out)}
    assert list(rows_of(out)[0]) == ['image', 'reference', 'psnr', 'errors']
    assert rows['a.png']['reference'] == 'a.bmp' and rows['b.png']['reference'] == 'b.png'
    psnr = pyiqa.create_metric('psnr', device='cpu')
    for name, ref in (('a', 'a.bmp'), ('b', 'b.png')):
        assert float(rows[f'{name}.png']['psnr']) == pytest.approx(psnr(str(dist / f'{name}.png'),
                                                                        str(refs / ref)).item(), abs=1e-3)
    # a target without a reference of its name fails alone (exit 1), named in its row
    Image.fromarray(base['b']).save(dist / 'c.png')
    res = cli('-t', str(dist), '-r', str(refs), '-m', 'psnr', '--csv', str(out), '--overwrite')
    rows = {r['image']: r for r in rows_of(out)}
    assert res.returncode == 1 and rows['c.png']['psnr'] == '' and 'no reference' in rows['c.png']['errors']
    assert float(rows['a.png']['psnr']) > float(rows['b.png']['psnr'])
