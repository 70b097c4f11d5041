"""Training augmentations beyond the flip: image scales, photometric distortion, scale
jitter with a crop. All random draws are stateless (from a seed tensor), so a run is
reproducible; every augmentation is off unless asked for.

Boxes are [ymin, xmin, ymax, xmax] float32 continuous pixels (see `transforms`).
"""

import tensorflow as tf

from faster_rcnn_tf.data import transforms

# Tags folded into a per-image or per-batch seed, one per random draw.
SIZE_TAG = 1
PHOTOMETRIC_TAG = 2
JITTER_TAG = 3


def sub_seed(seed, tag):
  """int64 [2] stateless seed for one kind of draw, from a [2] seed and an int tag."""
  return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tag)


def draw_min_size(sizes, seed):
  """One of `sizes` (a tuple of ints), uniformly: int32 scalar tensor.

  Multi-scale training (the shorter side drawn from a list) draws it once per batch by
  passing a seed built from the batch index.
  """
  sizes = tuple(int(s) for s in sizes)
  if len(sizes) == 1:
    return tf.constant(sizes[0], tf.int32)
  index = tf.random.stateless_uniform([], sub_seed(seed, SIZE_TAG), 0, len(sizes),
                                      dtype=tf.int32)
  return tf.gather(tf.constant(sizes, tf.int32), index)


def check_photometric(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
  """Raises ValueError naming the flag whose strength is out of its range."""
  for name, value, hi in (('brightness', brightness, 1.0), ('contrast', contrast, 1.0),
                          ('saturation', saturation, 1.0), ('hue', hue, 0.5)):
    if not 0.0 <= value <= hi:
      raise ValueError(f'--{name}: expected a strength in [0, {hi}], got {value}')


def photometric_distort(image, seed, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
  """Random brightness, contrast, saturation and hue changes (in that order).

  Args:
    image: float32 [H, W, 3] RGB in [0, 255].
    seed: int [2] stateless seed (one per image).
    brightness: adds a value drawn from [-brightness, brightness] x 255.
    contrast: scales each channel's distance to its mean by a factor from
      [1 - contrast, 1 + contrast].
    saturation: scales the HSV saturation by a factor from [1 - saturation,
      1 + saturation].
    hue: rotates the hue by a fraction of the colour circle from [-hue, hue] (at most 0.5).
    A strength of 0 leaves that property alone.
  Returns:
    float32 [H, W, 3] in [0, 255] (clipped after each step, as pixels would be).
  """
  check_photometric(brightness, contrast, saturation, hue)
  seeds = tf.random.experimental.stateless_split(sub_seed(seed, PHOTOMETRIC_TAG), 4)
  x = image / 255.0
  if brightness:
    x = tf.clip_by_value(tf.image.stateless_random_brightness(x, brightness, seeds[0]), 0., 1.)
  if contrast:
    x = tf.clip_by_value(tf.image.stateless_random_contrast(
        x, 1.0 - contrast, 1.0 + contrast, seeds[1]), 0.0, 1.0)
  if saturation:
    x = tf.clip_by_value(tf.image.stateless_random_saturation(
        x, 1.0 - saturation, 1.0 + saturation, seeds[2]), 0.0, 1.0)
  if hue:
    x = tf.clip_by_value(tf.image.stateless_random_hue(x, hue, seeds[3]), 0.0, 1.0)
  return x * 255.0


def check_scale_jitter(low, high):
  if not 0.0 < low <= high:
    raise ValueError(f'--scale_jitter: expected 0 < LOW <= HIGH, got {low},{high}')


def jitter_resize_and_crop(image, boxes, min_size, max_size, low, high, seed):
  """Scale jitter with a crop: the image is resized to the usual size times a factor drawn
  from [low, high], then a random window of at most the usual size is cut from it.

  The usual size is `transforms.compute_scale`'s (shorter side min_size, longer at most
  max_size). A factor below 1 gives a smaller image (no crop); above 1, a window of the
  usual size at a random offset. Boxes are scaled, shifted into the window and clipped to
  it; a box left less than 1 pixel high or wide is dropped (see `keep`).

  Args:
    image: [H, W, 3] any numeric dtype.
    boxes: float32 [N, 4] yxyx pixels of `image`.
    min_size, max_size: the usual resize targets (min_size may be a tensor).
    low, high: the factor's range (floats, 0 < low <= high).
    seed: int [2] stateless seed (one per image).
  Returns:
    (image float32 [h, w, 3], boxes float32 [N, 4] in its pixels, keep bool [N],
    scale float32 [] (the jittered factor), size int32 [2] (h, w)).
  """
  check_scale_jitter(low, high)
  seeds = tf.random.experimental.stateless_split(sub_seed(seed, JITTER_TAG), 3)
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  factor = tf.random.stateless_uniform([], seeds[0], low, high)
  scale = transforms.compute_scale(height, width, min_size, max_size) * factor
  usual = transforms.compute_resized_size(
      height, width, transforms.compute_scale(height, width, min_size, max_size))
  scaled = transforms.compute_resized_size(height, width, scale)
  resized = tf.image.resize(tf.cast(image, tf.float32), scaled, method='bilinear')
  factors = tf.cast(scaled, tf.float32) / tf.cast(tf.stack([height, width]), tf.float32)
  boxes = tf.cast(boxes, tf.float32) * tf.tile(factors, [2])
  window = tf.minimum(scaled, usual)
  room = scaled - window  # >= 0 per axis
  offset = tf.stack([
      tf.random.stateless_uniform([], seeds[1], 0, room[0] + 1, dtype=tf.int32),
      tf.random.stateless_uniform([], seeds[2], 0, room[1] + 1, dtype=tf.int32)])
  cropped = tf.slice(resized, tf.concat([offset, [0]], 0), tf.concat([window, [-1]], 0))
  shift = tf.tile(tf.cast(offset, tf.float32), [2])
  limit = tf.tile(tf.cast(window, tf.float32), [2])
  boxes = tf.clip_by_value(boxes - shift, 0.0, limit)
  keep = ((boxes[:, 2] - boxes[:, 0]) >= 1.0) & ((boxes[:, 3] - boxes[:, 1]) >= 1.0)
  return cropped, boxes, keep, scale, window
