"""Built-in synthetic detection data (`shapes`), generated on the fly with numpy.

Each image is a textured background (noise, gradient or stripes around a random base
colour) with 1..4 solid shapes of classes circle, square, triangle (class ids 1, 2, 3) of
random size, aspect ratio, colour and position, overlapping at most partly (a shape that
would hide more than half of an earlier one is placed again). Boxes are exact: the tight
bounds of each shape's *visible* pixels (ymin = first row, ymax = last row + 1, same for x).
Every shape pixel differs from the background under it (object colours are chosen with a
luminance at least 70 away from the background's base colour; the texture moves it by at
most 25).

Deterministic: image `index` of split `split` with seed `seed` is always the same (its
random generator is seeded with (seed, split, index)); train and test differ. Random access,
no files, no PIL. image_id = index.

Options (keyword arguments of `ShapesSource`, or `shapes:key=value,...` in a spec string):
    image_size=128          square images of this side
    train_images=2000, test_images=200   images in each split
    num_images=None         overrides the count for the requested split
    min_objects=1, max_objects=4
    min_object_size, max_object_size   range of a shape's size sqrt(h * w) before occlusion,
                            default 16 and 64 scaled by image_size / 128 (aspect ratio
                            h / w is drawn from 0.6..1.6)
"""

import numpy as np

from faster_rcnn_tf.data import records as records_lib
from faster_rcnn_tf.data.source import Source

CLASS_NAMES = ('circle', 'square', 'triangle')
SPLITS = {'train': 0, 'test': 1}
DEFAULT_NUM_IMAGES = {'train': 2000, 'test': 200}
_MAX_TEXTURE = 25.0      # the background texture moves luminance by at most this
_MIN_CONTRAST = 70.0     # object luminance differs from the background base colour by this
_LUMA = np.array([0.299, 0.587, 0.114])


def _luminance(rgb):
  return float(np.dot(rgb, _LUMA))


class ShapesSource(Source):
  """Synthetic shapes; see the module docstring."""

  decode_threads = 1  # generation is numpy under the GIL; threads would not help

  def __init__(self, split='train', seed=0, classes=None, image_size=128, num_images=None,
               train_images=DEFAULT_NUM_IMAGES['train'], test_images=DEFAULT_NUM_IMAGES['test'],
               min_objects=1, max_objects=4, min_object_size=None, max_object_size=None,
               name='shapes'):
    if split not in SPLITS:
      raise ValueError(f'shapes has splits {sorted(SPLITS)}, not {split!r}')
    if classes is not None:
      unknown = [c for c in classes if c not in CLASS_NAMES]
      if unknown:
        raise ValueError(f'shapes has classes {CLASS_NAMES}; unknown: {unknown}')
    super().__init__(name, split, classes if classes is not None else CLASS_NAMES)
    self.seed = int(seed)
    self.image_size = int(image_size)
    if num_images is None:
      num_images = train_images if split == 'train' else test_images
    self._num_images = int(num_images)
    self.min_objects = int(min_objects)
    self.max_objects = int(max_objects)
    scale = self.image_size / 128.0
    self.min_object_size = float(16 * scale if min_object_size is None else min_object_size)
    self.max_object_size = float(64 * scale if max_object_size is None else max_object_size)
    if not 0 < self.min_object_size <= self.max_object_size <= self.image_size:
      raise ValueError('need 0 < min_object_size <= max_object_size <= image_size')
    self._class_index = {n: i + 1 for i, n in enumerate(self.class_names)}
    size = self.image_size
    self._yc = (np.arange(size, dtype=np.float32) + 0.5)[:, None]  # pixel centres
    self._xc = (np.arange(size, dtype=np.float32) + 0.5)[None, :]

  def __len__(self):
    return self._num_images

  def _rng(self, index, stream):
    return np.random.default_rng([self.seed, SPLITS[self.split], int(index), stream])

  def _background(self, index):
    """float32 [S, S, 3] background and its base colour (before rounding)."""
    rng = self._rng(index, 0)
    size = self.image_size
    base = rng.uniform(50.0, 200.0, size=3)
    kind = rng.integers(3)
    angle = rng.uniform(0, np.pi)
    along = self._yc * np.float32(np.cos(angle)) + self._xc * np.float32(np.sin(angle))
    if kind == 0:  # noise
      amplitude = np.float32(rng.uniform(5, _MAX_TEXTURE))
      texture = (rng.random((size, size, 3), dtype=np.float32) * 2 - 1) * amplitude
    else:
      if kind == 1:  # gradient
        centred = along - along.mean()
        wave = centred / max(float(np.abs(centred).max()), 1e-6)
      else:  # stripes
        period = rng.uniform(4.0, 24.0) * size / 128.0
        wave = np.sin(along * np.float32(2 * np.pi / period) + np.float32(rng.uniform(0, 6.3)))
      weights = rng.uniform(-1.0, 1.0, size=3).astype(np.float32) * np.float32(_MAX_TEXTURE)
      texture = wave[:, :, None] * weights
    return texture + base.astype(np.float32), base

  def background(self, index):
    """uint8 [S, S, 3]: image `index` without its shapes (for tests and debugging)."""
    return np.round(self._background(index)[0]).astype(np.uint8)

  def _mask(self, cls, y0, x0, h, w, pointing_up):
    yc, xc = self._yc, self._xc
    if cls == 'square':
      return (yc >= y0) & (yc < y0 + h) & (xc >= x0) & (xc < x0 + w)
    if cls == 'circle':
      return (((yc - y0 - h / 2) / (h / 2)) ** 2 + ((xc - x0 - w / 2) / (w / 2)) ** 2) <= 1.0
    depth = (yc - y0) if pointing_up else (y0 + h - yc)   # distance from the apex
    return (depth >= 0) & (depth < h) & (np.abs(xc - x0 - w / 2) <= depth / h * (w / 2))

  @staticmethod
  def _colour(rng, base_luminance):
    """A random RGB colour whose luminance is >= _MIN_CONTRAST away from base_luminance."""
    while True:
      candidates = rng.integers(0, 256, size=(32, 3))
      ok = np.abs(candidates @ _LUMA - base_luminance) >= _MIN_CONTRAST
      if ok.any():
        return candidates[np.argmax(ok)].astype(np.uint8)

  def load(self, index):
    if not 0 <= index < self._num_images:
      raise IndexError(index)
    background, base = self._background(index)
    rng = self._rng(index, 1)
    size = self.image_size
    labels = np.zeros((size, size), np.int16)  # 0 = background, k = k-th placed shape
    areas, names, colours = [], [], []
    for _ in range(rng.integers(self.min_objects, self.max_objects + 1)):
      for _attempt in range(20):
        cls = CLASS_NAMES[rng.integers(len(CLASS_NAMES))]
        side = rng.uniform(self.min_object_size, self.max_object_size)
        aspect = np.exp(rng.uniform(np.log(0.6), np.log(1.6)))
        h = min(side * np.sqrt(aspect), size)
        w = min(side / np.sqrt(aspect), size)
        y0 = rng.uniform(0, size - h)
        x0 = rng.uniform(0, size - w)
        mask = self._mask(cls, y0, x0, h, w, rng.random() < 0.5)
        area = int(mask.sum())
        if area < 4:
          continue
        covered = np.bincount(labels[mask], minlength=len(areas) + 1)[1:]
        visible = np.bincount(labels.ravel(), minlength=len(areas) + 1)[1:] - covered
        if len(areas) and np.any(visible < 0.5 * np.asarray(areas)):
          continue
        labels[mask] = len(areas) + 1
        areas.append(area)
        names.append(cls)
        colours.append(self._colour(rng, _luminance(base)))
        break
    image = np.round(background).astype(np.uint8)
    for k, colour in enumerate(colours, start=1):
      image[labels == k] = colour

    boxes, classes = [], []
    for k, cls in enumerate(names, start=1):
      rows = np.flatnonzero((labels == k).any(axis=1))
      cols = np.flatnonzero((labels == k).any(axis=0))
      if cls not in self._class_index:
        self.problems.report('unknown_class', f'image {index}',
                             f'{cls!r} not in {self.class_names}; dropped')
        continue
      boxes.append([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])
      classes.append(self._class_index[cls])
    record = records_lib.make_record(image, boxes, classes, None, index)
    return self._finish(record, f'image {index}')
