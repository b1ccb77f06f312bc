#!/usr/bin/env python
"""Contact sheet of the degradation types (rows) x levels 0..5 (columns) on one image.

    python scripts/degradation_sheet.py chelsea docs/images/degradation_sheet.jpg --size 128
    python scripts/degradation_sheet.py chelsea docs/images/degradation_sheet_camera.jpg --family camera
    python scripts/degradation_sheet.py chelsea docs/images/degradation_sheet_tone.jpg --family tone
    python scripts/degradation_sheet.py photo.png sheet.png --family all

--family picks the rows: ``kadid`` (the 25 KADID-10k types, default), ``camera`` (the camera
family), ``tone`` (the tone family) or ``all``; or name types with --types.

IMAGE is a file path or the name of a colour ``skimage.data`` image (astronaut, chelsea,
coffee, rocket, ...). The image is centre-cropped to a square and resized to --size px.
The output format follows OUT's extension (JPEG quality --quality).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crossiqa_pyiqa.degradations import ALL_DEGRADATIONS, DEGRADATIONS, apply, info, parameter  # noqa: E402
from crossiqa_pyiqa.degradations import resolve_types  # noqa: E402


def load_image(spec: str, size: int) -> torch.Tensor:
    """(1,3,size,size) float tensor from a path or a ``skimage.data`` name, centre-cropped."""
    if not Path(spec).exists():
        import skimage.data

        fn = getattr(skimage.data, spec, None)
        if fn is None or not callable(fn):
            raise SystemExit(f'{spec!r} is neither a file nor a skimage.data image')
        arr = np.asarray(fn())
    else:
        arr = np.asarray(Image.open(spec).convert('RGB'))
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise SystemExit(f'{spec!r} is not a colour image (shape {arr.shape})')
    arr = arr[..., :3]
    h, w = arr.shape[:2]
    s = min(h, w)
    arr = arr[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float() / 255
    mode = 'area' if s >= size else 'bicubic'
    return F.interpolate(x, size=(size, size), mode=mode).clamp(0, 1)


def _font(px: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _fmt(v: float | None) -> str:
    if v is None:
        return 'identity'
    return f'{v:g}' if abs(v) >= 0.01 or v == 0 else f'{v:.0e}'


def make_sheet(x: torch.Tensor, seed: int = 0, pad: int = 4, label_w: int = 190,
               types: tuple[str, ...] | list[str] = DEGRADATIONS) -> Image.Image:
    size = x.shape[-1]
    head = 22
    sub = 13
    cell_h = size + sub
    W = label_w + 6 * (size + pad) + pad
    H = head + len(types) * (cell_h + pad) + pad
    sheet = Image.new('RGB', (W, H), 'white')
    draw = ImageDraw.Draw(sheet)
    big, small = _font(13), _font(10)
    for lv in range(6):
        draw.text((label_w + pad + lv * (size + pad) + size // 2 - 20, 4), f'level {lv}', fill='black', font=big)
    for r, name in enumerate(types):
        top = head + r * (cell_h + pad)
        deg = info(name)
        draw.text((6, top + size // 2 - 16), f'{ALL_DEGRADATIONS.index(name) + 1}. {name}', fill='black', font=big)
        draw.text((6, top + size // 2 + 2), deg.param_name + ('' if deg.torch_native else ' (codec)'),
                  fill=(90, 90, 90), font=small)
        for lv in range(6):
            y = apply(x, name, lv, generator=torch.Generator().manual_seed(seed))
            tile = Image.fromarray((y[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            left = label_w + pad + lv * (size + pad)
            sheet.paste(tile, (left, top))
            if lv:
                draw.text((left + 2, top + size), _fmt(parameter(name, lv)), fill=(60, 60, 60), font=small)
    return sheet


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('image', help='image path or skimage.data name (astronaut, chelsea, coffee, rocket, ...)')
    ap.add_argument('out', help='output picture (.png, .jpg, ...)')
    ap.add_argument('--size', type=int, default=128, help='tile size in px (default 128)')
    ap.add_argument('--seed', type=int, default=0, help='generator seed for the random types')
    ap.add_argument('--quality', type=int, default=80, help='JPEG quality when OUT is a .jpg')
    ap.add_argument('--family', choices=('kadid', 'camera', 'tone', 'all'), default='kadid',
                    help='rows: the 25 KADID types (default), the camera family, the tone family, or all types')
    ap.add_argument('--types', nargs='+', default=None, help='rows: these types / families instead of --family')
    args = ap.parse_args(argv)
    try:
        types = resolve_types(args.types or [args.family], 'types')
    except ValueError as error:
        ap.error(str(error))
    t0 = time.time()
    x = load_image(args.image, args.size)
    sheet = make_sheet(x, args.seed, types=types)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kw = {'quality': args.quality, 'optimize': True} if out.suffix.lower() in ('.jpg', '.jpeg') else {}
    sheet.save(out, **kw)
    print(f'wrote {out} ({sheet.width}x{sheet.height}, {out.stat().st_size / 1024:.0f} KB) '
          f'in {time.time() - t0:.1f} s')


if __name__ == '__main__':
    main()
