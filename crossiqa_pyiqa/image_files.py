"""Which files are images: one allow-list for the CLI (``crossiqa-pyiqa score -t FOLDER``) and training.

Folders are listed by extension (case-insensitive), never by "whatever Pillow has a plugin
for": Pillow registers ``.eps``/``.ps`` (decoded by running Ghostscript when it is
installed), ``.pdf``, ``.h5``, ``.fits``, ``.icns``... which are not photos to score and
whose decoders are not meant for untrusted folders. Everything else found is *counted and
named*: files of photo formats Pillow cannot read here (``.heic``, camera raw ``.dng``...)
separately from other files, and folders (or links) that cannot be listed.

A file given by name (``-t photo.heic``) is not filtered: it is read, or fails with a
message that names it.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

#: The image files that are listed from folders (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = ('.bmp', '.gif', '.jpeg', '.jpg', '.pgm', '.png', '.pnm', '.ppm', '.tif', '.tiff',
                                     '.webp')
#: Photo formats that are skipped with a word of their own (convert them to one of the above).
UNSUPPORTED_IMAGE_EXTENSIONS: tuple[str, ...] = (
    '.3fr', '.arw', '.avif', '.cr2', '.cr3', '.crw', '.dng', '.eps', '.erf', '.heic', '.heif', '.j2k', '.jp2',
    '.jpx', '.jxl', '.kdc', '.mos', '.mrw', '.nef', '.nrw', '.orf', '.pdf', '.pef', '.ps', '.psd', '.raf', '.raw',
    '.rw2', '.sr2', '.srf', '.srw', '.svg', '.x3f', '.ico', '.icns', '.tga', '.xcf')


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether a file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def is_unsupported_image_path(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(UNSUPPORTED_IMAGE_EXTENSIONS)


@dataclass
class FolderScan:
    """What :func:`scan_folder` found under one folder (all paths joined onto the folder)."""

    folder: str
    images: list[str] = field(default_factory=list)  # sorted
    unsupported: list[str] = field(default_factory=list)  # photo formats not read here (.heic, .dng...)
    other: list[str] = field(default_factory=list)  # files that are not images
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): folders that cannot be listed
    duplicates: list[str] = field(default_factory=list)  # paths reaching a file already listed (links)

    @property
    def skipped(self) -> list[str]:
        return self.unsupported + self.other

    def report_lines(self, limit: int = 50) -> list[str]:
        """Lines that count and name everything not listed as an image (empty when nothing was skipped)."""
        lines = []

        def named(paths: list[str]) -> str:
            shown = ', '.join(os.path.relpath(p, self.folder) for p in paths[:limit])
            return shown + (f', ... and {len(paths) - limit} more' if len(paths) > limit else '')

        if self.unreadable:
            lines.append(f'{len(self.unreadable)} path(s) under {self.folder} could not be read and were skipped: '
                         + '; '.join(f'{os.path.relpath(p, self.folder)} ({why})' for p, why in self.unreadable[:limit]))
        if self.unsupported:
            lines.append(f'{len(self.unsupported)} image file(s) of formats not read here were skipped '
                         f'(convert them to {"/".join(e[1:] for e in IMAGE_EXTENSIONS)}): {named(self.unsupported)}')
        if self.other:
            lines.append(f'{len(self.other)} other file(s) are not images and were skipped: {named(self.other)}')
        if self.duplicates:
            lines.append(f'{len(self.duplicates)} path(s) lead to files already listed (links); each file is '
                         f'scored once: {named(self.duplicates)}')
        return lines


def scan_folder(folder: str, dedupe_files: bool = True) -> FolderScan:
    """Images under ``folder`` (recursive, symbolic links followed, each real folder once).

    With ``dedupe_files``, a file reached by two paths (links) is listed once. Folders that
    cannot be listed are recorded in ``unreadable`` with the reason, never silently dropped.
    """
    scan = FolderScan(folder)
    seen_dirs: set[str] = set()
    seen_files: set[tuple[int, int]] = set()

    def onerror(error: OSError) -> None:
        scan.unreadable.append((error.filename or folder, error.strerror or type(error).__name__))

    for root, dirs, files in os.walk(folder, followlinks=True, onerror=onerror):
        real = os.path.realpath(root)
        if real in seen_dirs:  # a symlink loop, or a second link to a folder already listed
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if not is_image_path(name):
                if os.path.islink(path) and not os.path.exists(path):
                    scan.unreadable.append((path, 'broken symbolic link'))
                elif is_unsupported_image_path(name):
                    scan.unsupported.append(path)
                else:
                    scan.other.append(path)
                continue
            try:
                st = os.stat(path)
            except OSError as error:
                why = 'broken symbolic link' if os.path.islink(path) else error.strerror or type(error).__name__
                scan.unreadable.append((path, why))
                continue
            key = (st.st_dev, st.st_ino)
            if dedupe_files and key in seen_files:
                scan.duplicates.append(path)
                continue
            seen_files.add(key)
            scan.images.append(path)
    scan.images.sort()
    return scan


def find_images(folder: str) -> list[str]:
    """Sorted image paths under ``folder`` (training data); what was skipped is counted in one warning."""
    scan = scan_folder(folder, dedupe_files=False)
    lines = scan.report_lines(limit=10)
    if lines:
        print('\n'.join(lines), file=sys.stderr)
    return scan.images
