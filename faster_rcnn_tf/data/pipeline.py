"""tf.data input pipeline: source records -> batches in the `faster_rcnn_tf.inputs` format.

Per image: parallel decode (the source's `as_dataset`), optional removal of difficult boxes,
random horizontal flip (training only), resize (shorter side min_size, longer at most
max_size; `transforms.compute_scale`), ground truth padded/truncated to `max_boxes`.
Training can also draw the shorter side from a list once per batch (multi-scale
training; evaluation uses one size), jitter the scale with a crop, and distort the
colours (`augment`); all off by default.
Then batching with zero padding at the bottom/right up to a multiple of `pad_multiple`, and
prefetching. Images stay float32 in [0, 255]: the model subtracts its backbone's pixel mean.

Shuffling (training) permutes the image order with `shuffle_seed` before decoding, a new
permutation each epoch, deterministically. Flips are drawn with a stateless RNG from
(shuffle_seed, position in the stream), so a run is reproducible; so are the other
augmentations' draws (the size from (shuffle_seed, batch index)).
"""

import sys
import time

import numpy as np
import tensorflow as tf
from absl import logging

from faster_rcnn_tf import inputs
from faster_rcnn_tf.data import augment
from faster_rcnn_tf.data import records as R
from faster_rcnn_tf.data import transforms


def _report_truncation(source, image_id, num_boxes, max_boxes):
  source.problems.report('too_many_boxes', f'image_id {int(image_id)}',
                         f'{int(num_boxes)} boxes, only the first {int(max_boxes)} kept')
  return np.int32(0)


def bucket_sides(min_size, max_size, pad_multiple=32, steps=4):
  """The few padded side lengths evaluation batches use (`make_dataset(pad_sides=...)`).

  A resized image's sides are at most max_size, and its shorter side is min_size unless
  the longer one hit max_size; so the sides max_size * k / steps (k = 1..steps) and
  min_size, each rounded up to a multiple of pad_multiple, cover every image with a
  handful of shapes (each one traces the detector once).

  Returns:
    sorted list of ints.
  """
  step = max(int(pad_multiple), 1)
  sides = {int(min_size)} | {-(-int(max_size) * k // steps) for k in range(1, steps + 1)}
  return sorted({-(-side // step) * step for side in sides})


def make_dataset(source, *, training, batch_size, min_size=600, max_size=1000, max_boxes=100,
                 flip=True, shuffle_seed=0, skip_difficult=False, pad_multiple=32,
                 drop_remainder=None, repeat=None, pad_sides=None, brightness=0.0,
                 contrast=0.0, saturation=0.0, hue=0.0, scale_jitter=None):
  """Builds the batched dataset.

  Args:
    source: a dataset source (`data.registry.get_source`), anything with `as_dataset()`.
    training: shuffle (if shuffle_seed is not None), flip (if flip), repeat and drop the last
      partial batch (unless told otherwise).
    batch_size: images per batch.
    min_size, max_size: resize targets (see `transforms.compute_scale`). min_size may be a
      sequence of ints: in training one of them is drawn for each batch (all images of a
      batch share it); otherwise the largest is used.
    max_boxes: G, ground truth rows per image; extra boxes are cut (first max_boxes kept)
      and reported as 'too_many_boxes' in `source.problems`.
    flip: random horizontal flip with probability 0.5 (training only).
    shuffle_seed: int seed for shuffling and flipping; None disables shuffling.
    skip_difficult: drop difficult boxes (training on VOC typically does).
    pad_multiple: padded image height and width are multiples of this (1: no rounding).
    drop_remainder: default `training`.
    repeat: repeat forever; default `training`.
    pad_sides: optional sorted list of allowed padded heights and widths (`bucket_sides`):
      each padded side becomes the smallest one that fits (the multiple of pad_multiple
      above the largest, if none does), so batches take few distinct shapes.
    brightness, contrast, saturation, hue: photometric distortion strengths (training
      only; `augment.photometric_distort`); 0 leaves that property alone.
    scale_jitter: None, or (low, high): in training the resize factor is multiplied by
      a factor from [low, high] and a window of at most the usual size is cropped
      (`augment.jitter_resize_and_crop`; boxes cut to under a pixel are dropped).
  Returns:
    tf.data.Dataset of dicts: images float32 [B, Hp, Wp, 3], image_sizes int32 [B, 2],
    scales float32 [B], original_sizes int32 [B, 2], image_ids int64 [B],
    gt_boxes float32 [B, G, 4] (yxyx, resized pixels), gt_classes int32 [B, G] (0 = pad),
    gt_difficult bool [B, G].
    gt_boxes are scaled by the exact per-axis ratios image_sizes / original_sizes, so they sit
    on the resized pixels; `scales` is the nominal factor from `compute_scale`, which differs
    from those ratios only through the rounding of the size (under half a pixel across the
    image). Dividing boxes by `scales` maps them back to original pixels to that precision;
    original_sizes / image_sizes per axis maps them back exactly.
  """
  drop_remainder = training if drop_remainder is None else drop_remainder
  repeat = training if repeat is None else repeat
  do_flip = bool(training and flip)
  seed = 0 if shuffle_seed is None else int(shuffle_seed)
  sizes = tuple(int(v) for v in min_size) if isinstance(min_size, (list, tuple)) else (
      int(min_size),)
  if not training:
    sizes = (max(sizes),)
  photometric = dict(brightness=brightness, contrast=contrast, saturation=saturation,
                     hue=hue) if training else {}
  augment.check_photometric(**photometric)
  do_photometric = any(photometric.values())
  jitter = tuple(float(v) for v in scale_jitter) if (training and scale_jitter) else None
  if jitter:
    augment.check_scale_jitter(*jitter)

  ds = source.as_dataset(shuffle_seed=shuffle_seed if training else None)
  reports_in_graph = bool(getattr(source, 'reports_in_graph', False))
  epoch_size = (int(getattr(source, 'num_images', 0) or 2 ** 62) if reports_in_graph
                else 0)
  if repeat:
    ds = ds.repeat()
  ds = ds.enumerate()

  def prepare(position, record):
    boxes = record[R.BOXES]
    classes = record[R.CLASSES]
    difficult = record[R.DIFFICULT]
    if skip_difficult:
      keep = tf.logical_not(difficult)
      boxes = tf.boolean_mask(boxes, keep)
      classes = tf.boolean_mask(classes, keep)
      difficult = tf.boolean_mask(difficult, keep)
    image = record[R.IMAGE]
    image_seed = tf.stack([tf.constant(seed, tf.int64), position])
    size_seed = tf.stack([tf.constant(seed, tf.int64), position // batch_size])
    target = augment.draw_min_size(sizes, size_seed)
    if do_flip:
      # Flipping before resizing is equivalent (half-pixel-centre sampling is mirror
      # symmetric) and moves 4x fewer bytes than flipping the float32 result.
      coin = tf.random.stateless_uniform([], seed=image_seed)
      image, boxes = tf.cond(coin < 0.5,
                             lambda: transforms.flip_left_right(image, boxes),
                             lambda: (image, tf.cast(boxes, tf.float32)))
    if jitter:
      image, boxes, keep, scale, size = augment.jitter_resize_and_crop(
          image, boxes, target, max_size, jitter[0], jitter[1], image_seed)
      boxes = tf.boolean_mask(boxes, keep)
      classes = tf.boolean_mask(classes, keep)
      difficult = tf.boolean_mask(difficult, keep)
    else:
      image, boxes, scale, size = transforms.resize_image_and_boxes(
          image, boxes, target, max_size)
    if do_photometric:
      image = augment.photometric_distort(image, image_seed, **photometric)
    num = tf.shape(classes)[0]
    image_id = record[R.IMAGE_ID]

    def warn():
      if reports_in_graph:  # no Python callback in its graph
        def say():
          with tf.control_dependencies([tf.print(
              'too_many_boxes: image_id', image_id, ':', num, 'boxes, only the first',
              max_boxes, 'kept', output_stream=sys.stderr)]):
            return tf.constant(0)
        # Once, in the first epoch (Problems counts each case once on the Python path).
        first_epoch = position < epoch_size
        report = tf.cond(first_epoch, say, lambda: tf.constant(0))
      else:
        report = tf.numpy_function(lambda i, n: _report_truncation(source, i, n, max_boxes),
                                   [image_id, num], tf.int32)
      with tf.control_dependencies([report]):
        return tf.identity(num)

    num = tf.cond(num > max_boxes, warn, lambda: num)
    num = tf.minimum(num, max_boxes)
    pad = [[0, max_boxes - num]]
    gt_boxes = tf.pad(boxes[:num], pad + [[0, 0]])
    gt_classes = tf.pad(classes[:num], pad)
    gt_difficult = tf.pad(difficult[:num], pad)
    return {
        inputs.IMAGES: image,
        inputs.IMAGE_SIZES: size,
        inputs.SCALES: scale,
        inputs.ORIGINAL_SIZES: tf.cast(record[R.ORIGINAL_SIZE], tf.int32),
        inputs.IMAGE_IDS: tf.cast(image_id, tf.int64),
        inputs.GT_BOXES: tf.ensure_shape(gt_boxes, [max_boxes, 4]),
        inputs.GT_CLASSES: tf.ensure_shape(gt_classes, [max_boxes]),
        inputs.GT_DIFFICULT: tf.ensure_shape(gt_difficult, [max_boxes]),
    }

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  padded_shapes = {
      inputs.IMAGES: [None, None, 3], inputs.IMAGE_SIZES: [2], inputs.SCALES: [],
      inputs.ORIGINAL_SIZES: [2], inputs.IMAGE_IDS: [],
      inputs.GT_BOXES: [max_boxes, 4], inputs.GT_CLASSES: [max_boxes],
      inputs.GT_DIFFICULT: [max_boxes],
  }
  ds = ds.padded_batch(batch_size, padded_shapes=padded_shapes, drop_remainder=drop_remainder)

  if (pad_multiple and pad_multiple > 1) or pad_sides:
    multiple = max(int(pad_multiple or 1), 1)
    sides = tf.constant(sorted(pad_sides or [0]), tf.int32)

    def pad_images(batch):
      images = batch[inputs.IMAGES]
      shape = tf.shape(images)
      target = (shape[1:3] + multiple - 1) // multiple * multiple
      if pad_sides:
        fits = sides[None, :] >= target[:, None]                    # [2, S]
        smallest = tf.reduce_min(tf.where(fits, sides[None, :], tf.int32.max), axis=1)
        target = tf.where(tf.reduce_any(fits, axis=1), smallest, target)
      batch = dict(batch)
      batch[inputs.IMAGES] = tf.pad(
          images, [[0, 0], [0, target[0] - shape[1]], [0, target[1] - shape[2]], [0, 0]])
      return batch
    ds = ds.map(pad_images, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def measure_pipeline(dataset, num_batches, warmup_batches=2):
  """Images per second produced by iterating `dataset` (after `warmup_batches`).

  Args:
    dataset: a batched dataset whose elements have `inputs.IMAGES`.
    num_batches: batches timed (fewer if the dataset ends first).
    warmup_batches: batches pulled first and not timed (pipeline start-up).
  Returns:
    float images/s.
  """
  iterator = iter(dataset)
  for _ in range(warmup_batches):
    next(iterator)
  images = 0
  start = time.perf_counter()
  for _ in range(num_batches):
    try:
      batch = next(iterator)
    except StopIteration:
      break
    images += int(batch[inputs.IMAGES].shape[0])
  elapsed = time.perf_counter() - start
  if images == 0:
    logging.warning('measure_pipeline: no batches after warm-up')
    return 0.0
  return images / elapsed
