"""Drawing boxes with labels on images, and saving image grids (Pillow).

Used by `data.inspect`, evaluation and training summaries. Boxes follow the project
convention (`ops.box_ops`): [ymin, xmin, ymax, xmax] float continuous pixels; the outline
is drawn on the pixels just inside the box (the rectangle of pixels the box covers).
"""

import io
import math
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from faster_rcnn_tf import fileio

_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def color_for(label):
  """A stable RGB colour for a label string (by the text before any score)."""
  key = str(label).split(':')[0].split(' ')[0]
  return _PALETTE[zlib.crc32(key.encode('utf-8')) % len(_PALETTE)]


def _font(size):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow < 10.1 has no sized default font
    return ImageFont.load_default()


def draw_boxes(image_uint8, boxes_yxyx, labels, colors=None):
  """Draws box outlines and label texts on a copy of an image.

  Args:
    image_uint8: uint8 [H, W, 3] (or [H, W]) array.
    boxes_yxyx: [N, 4] boxes, continuous pixels of this image.
    labels: N strings drawn at each box's top-left corner ('' draws no text).
    colors: optional N RGB tuples; default a stable colour per label name.
  Returns:
    uint8 [H, W, 3] array.
  """
  image = np.asarray(image_uint8)
  if image.ndim == 2:
    image = np.repeat(image[:, :, None], 3, axis=2)
  pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert('RGB')
  draw = ImageDraw.Draw(pil)
  height, width = image.shape[:2]
  line = max(1, round(min(height, width) / 250))
  font = _font(max(10, round(min(height, width) / 40)))
  boxes = np.asarray(boxes_yxyx, np.float64).reshape(-1, 4)
  labels = list(labels)
  if len(labels) != len(boxes):
    raise ValueError(f'{len(boxes)} boxes but {len(labels)} labels')
  for i, (box, label) in enumerate(zip(boxes, labels)):
    color = tuple(colors[i]) if colors is not None else color_for(label)
    ymin, xmin, ymax, xmax = box
    x0, y0 = math.floor(xmin), math.floor(ymin)
    x1, y1 = max(x0, math.ceil(xmax) - 1), max(y0, math.ceil(ymax) - 1)
    draw.rectangle([x0, y0, x1, y1], outline=color, width=line)
    if label:
      left, top, right, bottom = draw.textbbox((0, 0), str(label), font=font)
      tw, th = right - left + 4, bottom - top + 4
      ty = y0 - th if y0 - th >= 0 else y0
      tx = min(max(x0, 0), max(width - tw, 0))
      draw.rectangle([tx, ty, tx + tw - 1, ty + th - 1], fill=color)
      text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
      draw.text((tx + 2 - left, ty + 2 - top), str(label), fill=text_color, font=font)
  return np.asarray(pil)


def save_grid(images, path, columns=None, gap=4):
  """Tiles uint8 images (any sizes) into one PNG, row by row.

  Args:
    images: list of uint8 [H, W, 3] arrays.
    path: output file (PNG).
    columns: images per row; default about sqrt(len(images)).
    gap: white pixels between cells.
  Returns:
    path.
  """
  images = [np.asarray(im, np.uint8) for im in images]
  if not images:
    raise ValueError('save_grid: no images')
  columns = columns or math.ceil(math.sqrt(len(images)))
  rows = math.ceil(len(images) / columns)
  cell_h = max(im.shape[0] for im in images)
  cell_w = max(im.shape[1] for im in images)
  grid = np.full((rows * (cell_h + gap) - gap, columns * (cell_w + gap) - gap, 3), 255,
                 np.uint8)
  for k, im in enumerate(images):
    if im.ndim == 2:
      im = np.repeat(im[:, :, None], 3, axis=2)
    r, c = divmod(k, columns)
    y, x = r * (cell_h + gap), c * (cell_w + gap)
    grid[y:y + im.shape[0], x:x + im.shape[1]] = im[:, :, :3]
  return save_png(grid, path)


def save_png(image, path):
  """Writes uint8 [H, W, 3] `image` to `path` as a PNG, all or nothing (temporary file and
  rename: a full disk leaves no half-written picture); returns path."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format='PNG')
  fileio.atomic_write_bytes(path, buffer.getvalue())
  return path
