"""What the plugin's metrics accept: images read as a photo viewer shows them, and checked tensors.

Reading (:func:`read_image`), used by the CLI, by ``pyiqa.create_metric('crossiqa')(path)``
and by the training and statistics code:

- EXIF orientation is applied once (the image is turned the way a viewer shows it): to files,
  bytes and PIL images straight from ``Image.open`` (``img.format`` set). A PIL image made or
  edited in memory (``format`` is None: ``exif_transpose``, ``transpose``, ``rotate``, ``copy``,
  ``convert``...) is taken as its pixels are, even if it still carries an orientation tag
  (Pillow copies ``info['exif']`` into derived images, so the tag would turn it a second time).
- A path that does not exist raises ``FileNotFoundError``; a file that cannot be decoded
  raises :class:`ImageReadError` (a ``ValueError``).
- 16-bit images (``I;16*``, 32-bit integer ``I``) are scaled from [0, 65535] to [0, 1];
  8-bit channels from [0, 255]. Floating-point images (``F``) must already hold [0, 1].
- Palette, CMYK (through its embedded ICC profile when there is one), YCbCr, LAB, HSV,
  grayscale and bilevel images become RGB (grayscale: the same value in R, G and B).
- Alpha (``RGBA``, ``LA``, ``PA``, a palette with transparency) is composited over
  white, as a page or a viewer on white shows it; a fully opaque alpha changes nothing.
- Multi-frame files (GIF, TIFF) give their first frame. Embedded ICC profiles of RGB
  images are not applied: their values are taken as sRGB.

Tensors (:func:`check_image_batch`): ``(B, 3, H, W)`` floating point in [0, 1], no NaN or
infinity, at least one image, at least the model's minimum size. Inputs are cast to the
network's own dtype (float32, or float16/bfloat16 after ``net.half()`` / ``.bfloat16()``).
Integer tensors are refused (divide uint8 by 255 first). The checks are explicit ``if``
tests, so ``python -O`` keeps them. The [0, 1] range check follows pyiqa's switches: it is
off when the metric was made with ``as_loss=True`` or ``check_input_range=False`` (then
values outside [0, 1] are scored as they are, like pyiqa's own metrics do).

pyiqa's ``InferenceModel`` reads paths with its own reader (``imread2tensor``: no EXIF
orientation, 16-bit clipped to 8 bits), which the plugin does not patch. Instead the
plugin's architectures call :func:`attach_to_inference_model` when they are built: if
they are being built by an ``InferenceModel`` (``pyiqa.create_metric``), that one
instance reads paths with :func:`read_image` and checks tensors with the network's
own checks before pyiqa's asserts, honouring that instance's ``check_input_range`` (which
pyiqa turns off for ``as_loss=True``). Other metrics and pyiqa itself are untouched.
"""
from __future__ import annotations

import inspect
import io
import os
from typing import Any, Union

import numpy as np
import torch

ImageSource = Union[str, os.PathLike, bytes, 'PIL.Image.Image']  # noqa: F821

#: Pixel values this far outside [0, 1] are tolerated (rounding of float16 and resampling).
RANGE_TOLERANCE = 1e-3
#: What alpha is composited over (white, in [0, 1]).
ALPHA_BACKGROUND = 1.0


class ImageReadError(ValueError):
    """An image file cannot be decoded, or its pixel scale is unknown."""


def _name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f'<{type(source).__name__}>'


def open_image(source: ImageSource):
    """A fully decoded PIL image (first frame) with its EXIF orientation applied once.

    Files and bytes are turned upright by their EXIF tag, as is a PIL image straight from
    ``Image.open`` (``format`` set). A PIL image derived in memory (``format`` None) is taken
    as it is: it may carry a stale tag copied from the file it was turned from.
    """
    from PIL import Image, ImageOps

    if isinstance(source, (str, os.PathLike)) and not os.path.exists(source):
        raise FileNotFoundError(f'Image file not found: {os.fspath(source)}')
    try:
        if isinstance(source, Image.Image):
            img = source
        elif isinstance(source, (bytes, bytearray)):
            img = Image.open(io.BytesIO(source))
        elif isinstance(source, (str, os.PathLike)):
            img = Image.open(os.fspath(source))
        else:
            raise TypeError(f'an image source is a path, bytes or a PIL image, not {type(source).__name__}')
        if getattr(img, 'n_frames', 1) > 1:
            img.seek(0)
        img.load()
        if isinstance(source, Image.Image) and source.format is None:
            return img  # made or edited in memory: its pixels are what the caller sees
        oriented = ImageOps.exif_transpose(img)
    except (TypeError, FileNotFoundError):
        raise
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise ImageReadError(f'Cannot read image {_name(source)}: {type(error).__name__}: {error}') from error
    return oriented if oriented is not None else img


def _cmyk_to_rgb(img):
    icc = img.info.get('icc_profile')
    if icc:
        try:
            from PIL import ImageCms

            return ImageCms.profileToProfile(img, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                             ImageCms.createProfile('sRGB'), outputMode='RGB')
        except Exception:  # a broken profile: the plain conversion below
            pass
    return img.convert('RGB')


def pil_to_array(img, name: str = '<image>') -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from any PIL mode (see the module docstring for the rules)."""
    mode = img.mode
    if mode in ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I'):
        gray = np.asarray(img).astype(np.float32)
        if gray.min() < 0 or gray.max() > 65535:
            raise ImageReadError(f'Image {name}: 32-bit integer values {gray.min():.0f}..{gray.max():.0f} are '
                                 'outside the 16-bit range [0, 65535]; the pixel scale is unknown.')
        gray /= 65535.0
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == 'F':
        gray = np.asarray(img).astype(np.float32)
        if not np.isfinite(gray).all() or gray.min() < -RANGE_TOLERANCE or gray.max() > 1 + RANGE_TOLERANCE:
            raise ImageReadError(f'Image {name}: floating-point pixels must lie in [0, 1], got '
                                 f'{np.nanmin(gray):.4g}..{np.nanmax(gray):.4g}; the pixel scale is unknown.')
        return np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2)
    if mode == 'CMYK':
        img = _cmyk_to_rgb(img)
    elif mode == 'P':
        img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
    elif mode in ('LA', 'La', 'PA', 'RGBa', 'RGBA'):
        img = img.convert('RGBA')
    elif mode != 'RGB':
        img = img.convert('RGB')  # 1, L, YCbCr, LAB, HSV, RGBX...
    arr = np.asarray(img).astype(np.float32) / 255.0
    if arr.shape[2] == 4:
        alpha = arr[..., 3:]
        arr = arr[..., :3] * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
    return arr


def read_image(source: ImageSource) -> torch.Tensor:
    """(3, H, W) float32 RGB in [0, 1], read as a photo viewer shows the image."""
    img = open_image(source)
    return torch.from_numpy(np.ascontiguousarray(pil_to_array(img, _name(source)))).permute(2, 0, 1).contiguous()


def read_image_uint8(source: ImageSource) -> np.ndarray:
    """(H, W, 3) uint8, the same rules as :func:`read_image` (training crops)."""
    arr = pil_to_array(open_image(source), _name(source))
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- tensors
def check_image_batch(x: Any, model: str, min_size: int, channels: tuple[int, ...] = (3,),
                      check_range: bool = True, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Validate a batch of images; returns it in ``dtype`` (a no-op for valid input of that dtype).

    Raises ``TypeError`` for a non-tensor or an integer tensor, ``ValueError`` for a wrong
    shape, an empty batch, an image below ``min_size``, NaN/inf or (with ``check_range``,
    pyiqa's ``check_input_range``) values outside [0, 1]. The result keeps its autograd graph.
    """
    shape_text = '(B, 3, H, W)' if channels == (3,) else f'(B, C, H, W) with C in {channels}'
    if not torch.is_tensor(x):
        raise TypeError(f'{model} expects a {shape_text} tensor in [0, 1] (or an image path through '
                        f'pyiqa.create_metric), got {type(x).__name__}')
    if x.dim() != 4 or x.shape[1] not in channels:
        raise ValueError(f'{model} expects a {shape_text} tensor, got {tuple(x.shape)}')
    if x.shape[0] == 0:
        raise ValueError(f'{model} got an empty batch {tuple(x.shape)}: pass at least one image')
    if not (x.is_floating_point()):
        raise TypeError(f'{model} expects floating-point pixels in [0, 1], got {x.dtype} '
                        '(for 8-bit images use x.float() / 255)')
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(f'Image of size {h}x{w} is smaller than the {min_size}x{min_size} minimum of {model}; '
                         f'{model} needs at least {min_size} pixels on each side (smaller images give scores '
                         'outside its range).')
    with torch.no_grad():
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(f'{model} got {bad} NaN or infinite pixel value(s); images must be finite, in [0, 1]')
        if check_range:
            lo, hi = float(x.min()), float(x.max())
    if check_range and (lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE):
        hint = ' (it looks like [0, 255]: divide by 255)' if hi > 2 and lo >= 0 else ''
        raise ValueError(f'{model} expects pixel values in [0, 1], got min={lo:.4g}, max={hi:.4g}{hint} '
                         '(pyiqa.create_metric(..., check_input_range=False) or as_loss=True turns this check off)')
    return x if x.dtype == dtype else x.to(dtype)


# ------------------------------------------------------------------ pyiqa InferenceModel
def _plugin_batched_tensor(net: torch.nn.Module, img: Any) -> torch.Tensor:
    """``InferenceModel._to_batched_tensor`` of a plugin metric: the plugin reader, then the net's checks."""
    x = img if torch.is_tensor(img) else read_image(img)[None]
    return net.prepare_input(x)


class _BatchedTensorReader:
    """Picklable, deep-copyable callable bound to a network and the InferenceModel that holds it.

    Each call hands the model's ``check_input_range`` (pyiqa sets it to False for ``as_loss``)
    to the network, whose own checks (in ``prepare_input`` and ``forward``) then follow it.
    """

    def __init__(self, net: torch.nn.Module, model: Any = None) -> None:
        self.net = net
        self.model = model

    def __call__(self, img: Any) -> torch.Tensor:
        if self.model is not None:
            self.net.check_input_range = bool(getattr(self.model, 'check_input_range', True))
        return _plugin_batched_tensor(self.net, img)


def attach_to_inference_model(net: torch.nn.Module, max_depth: int = 16) -> bool:
    """If ``net`` is being built inside pyiqa's ``InferenceModel.__init__``, make that instance
    read paths with :func:`read_image` and check tensors with ``net.prepare_input``.

    Returns whether an ``InferenceModel`` was found. Nothing of pyiqa is modified: only the
    instance that is building this network gets the reader, as an instance attribute.
    """
    try:
        from pyiqa.models.inference_model import InferenceModel
    except ImportError:  # pragma: no cover - pyiqa is a dependency
        return False
    target = InferenceModel.__init__.__code__
    frame = inspect.currentframe()
    try:
        f = frame.f_back if frame is not None else None
        for _ in range(max_depth):
            if f is None:
                return False
            if f.f_code is target:
                model = f.f_locals.get('self')
                if isinstance(model, InferenceModel):
                    object.__setattr__(model, '_to_batched_tensor', _BatchedTensorReader(net, model))
                    # set before build_network: False for as_loss=True or check_input_range=False
                    net.check_input_range = bool(getattr(model, 'check_input_range', True))
                    return True
                return False
            f = f.f_back
        return False
    finally:
        del frame
