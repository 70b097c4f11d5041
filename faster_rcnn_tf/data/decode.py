"""Decoding image files to RGB uint8 arrays, surviving what real files look like.

`decode_image_file(path, problems)` -> uint8 [H, W, 3] RGB, or None when the image must be
skipped. The format is sniffed from the content (a .jpg that is really a PNG decodes fine
and is reported as 'wrong_extension'); grayscale, 16-bit, alpha, palette and CMYK images are
converted to RGB and reported; a truncated or undecodable file is skipped and reported
(decoding "what is there" would leave boxes pointing at grey filler pixels, which is worse
training data than one image fewer). EXIF orientation is NOT applied (the pixels are used
as stored, as `tf.io.decode_image` does at serving time).

Decoding uses Pillow, which releases the GIL while decoding, so several threads (or
parallel `tf.data` map calls) decode in parallel.
"""

import io
import os

import numpy as np
from PIL import Image

# magic bytes -> format name (Pillow's names)
_MAGIC = (
    (b'\xff\xd8\xff', 'JPEG'),
    (b'\x89PNG\r\n\x1a\n', 'PNG'),
    (b'GIF87a', 'GIF'),
    (b'GIF89a', 'GIF'),
    (b'BM', 'BMP'),
    (b'II*\x00', 'TIFF'),
    (b'MM\x00*', 'TIFF'),
)
_EXTENSIONS = {
    '.jpg': 'JPEG', '.jpeg': 'JPEG', '.jpe': 'JPEG', '.png': 'PNG', '.gif': 'GIF',
    '.bmp': 'BMP', '.tif': 'TIFF', '.tiff': 'TIFF', '.webp': 'WEBP',
}
_GRAY_MODES = ('1', 'L', 'I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F')


def sniff_format(data):
  """Image format name ('JPEG', 'PNG', ...) from the first bytes, or None if unknown."""
  for magic, name in _MAGIC:
    if data.startswith(magic):
      return name
  if data[:4] == b'RIFF' and data[8:12] == b'WEBP':
    return 'WEBP'
  return None


def _to_uint8_gray(image):
  """Mode I/I;16/F -> L, scaling 16-bit data down instead of saturating it."""
  array = np.asarray(image)
  if array.dtype == np.uint8:
    return array
  if array.dtype == bool:
    return array.astype(np.uint8) * 255
  array = array.astype(np.float64)
  top = 65535.0 if array.max(initial=0) > 255 else 255.0
  return np.clip(np.round(array * (255.0 / top)), 0, 255).astype(np.uint8)


def decode_image_bytes(data, filename, problems):
  """Decodes encoded image bytes to RGB.

  Args:
    data: the file's bytes.
    filename: the file name, used for the extension check and in reports.
    problems: a `Problems`.
  Returns:
    uint8 [H, W, 3] RGB array, or None (problem reported) when the image cannot be decoded.
  """
  name = os.path.basename(str(filename))
  content_format = sniff_format(data)
  expected = _EXTENSIONS.get(os.path.splitext(name)[1].lower())
  if content_format and expected and content_format != expected:
    problems.report('wrong_extension', filename,
                    f'content is {content_format}, extension says {expected}; decoded as '
                    f'{content_format}')
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except OSError as e:  # Pillow raises OSError for truncated and corrupt data.
    kind = 'truncated_image' if 'truncated' in str(e).lower() else 'unreadable_image'
    problems.report(kind, filename, f'{e}; skipped')
    return None
  except Exception as e:  # pylint: disable=broad-except
    problems.report('unreadable_image', filename, f'{type(e).__name__}: {e}; skipped')
    return None

  mode = image.mode
  if mode == 'RGB':
    array = np.asarray(image)
  elif mode in _GRAY_MODES:
    problems.report('grayscale_image', filename, f'mode {mode}; converted to RGB')
    gray = _to_uint8_gray(image)
    array = np.repeat(gray[:, :, None], 3, axis=2)
  elif mode in ('LA', 'La'):
    problems.report('alpha_image', filename, f'mode {mode}; alpha dropped, converted to RGB')
    array = np.asarray(image.convert('L').convert('RGB'))
  elif mode in ('RGBA', 'RGBa', 'RGBX'):
    problems.report('alpha_image', filename, f'mode {mode}; alpha dropped')
    array = np.asarray(image.convert('RGB'))
  elif mode in ('P', 'PA'):
    problems.report('palette_image', filename, f'mode {mode}; converted to RGB')
    array = np.asarray(image.convert('RGB'))
  else:
    problems.report('cmyk_image', filename, f'mode {mode}; converted to RGB')
    try:
      array = np.asarray(image.convert('RGB'))
    except Exception as e:  # pylint: disable=broad-except
      problems.report('unreadable_image', filename, f'cannot convert mode {mode}: {e}; skipped')
      return None
  array = np.ascontiguousarray(array, dtype=np.uint8)
  if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
    problems.report('unreadable_image', filename, f'decoded shape {array.shape}; skipped')
    return None
  return array


def decode_image_file(path, problems, report_name=None):
  """Reads and decodes an image file (see `decode_image_bytes`).

  Args:
    path: the file.
    problems: a `Problems`.
    report_name: how reports name the file (default: `path`).
  Returns:
    uint8 [H, W, 3] or None ('missing_image' when the file cannot be read).
  """
  name = path if report_name is None else report_name
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    problems.report('missing_image', name, f'{e.strerror or e}; skipped')
    return None
  return decode_image_bytes(data, name, problems)
