"""The common per-image record every dataset source yields, and box sanity checks.

A record (see `faster_rcnn_tf.inputs`) is a dict of numpy arrays:

    image          uint8   [H, W, 3]  RGB
    boxes          float32 [N, 4]     [ymin, xmin, ymax, xmax], continuous pixels of `image`
                                      (pixel (r, c) covers [r, r+1) x [c, c+1); no "+1" widths;
                                      see `faster_rcnn_tf.ops.box_ops`)
    classes        int32   [N]        1..K; class id i is `source.class_names[i - 1]`
    difficult      bool    [N]
    image_id       int64   []         the source's id (each source documents its meaning)
    original_size  int32   [2]        (height, width) == image.shape[:2]

`RECORD_SIGNATURE` is the matching `tf.TensorSpec` dict for `tf.data`.
"""

import numpy as np
import tensorflow as tf

IMAGE = 'image'
BOXES = 'boxes'
CLASSES = 'classes'
DIFFICULT = 'difficult'
IMAGE_ID = 'image_id'
ORIGINAL_SIZE = 'original_size'

RECORD_SIGNATURE = {
    IMAGE: tf.TensorSpec([None, None, 3], tf.uint8),
    BOXES: tf.TensorSpec([None, 4], tf.float32),
    CLASSES: tf.TensorSpec([None], tf.int32),
    DIFFICULT: tf.TensorSpec([None], tf.bool),
    IMAGE_ID: tf.TensorSpec([], tf.int64),
    ORIGINAL_SIZE: tf.TensorSpec([2], tf.int32),
}


def make_record(image, boxes, classes, difficult=None, image_id=0):
  """Builds a record with the exact dtypes and shapes of the format above.

  Args:
    image: uint8 array [H, W, 3].
    boxes: [N, 4] (or empty) yxyx in pixels of `image`.
    classes: [N] ints in 1..K.
    difficult: [N] bools, or None for all False.
    image_id: int.
  Returns:
    the record dict.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f'image must be uint8 [H, W, 3], got {image.dtype} {image.shape}')
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  classes = np.asarray(classes, np.int32).reshape(-1)
  if difficult is None:
    difficult = np.zeros(len(classes), bool)
  difficult = np.asarray(difficult, bool).reshape(-1)
  if not len(boxes) == len(classes) == len(difficult):
    raise ValueError(f'boxes/classes/difficult lengths differ: '
                     f'{len(boxes)}, {len(classes)}, {len(difficult)}')
  return {
      IMAGE: image,
      BOXES: boxes,
      CLASSES: classes,
      DIFFICULT: difficult,
      IMAGE_ID: np.int64(image_id),
      ORIGINAL_SIZE: np.array(image.shape[:2], np.int32),
  }


def check_declared_size(declared, height, width, problems, filename, where):
  """Reports an annotation's declared (height, width) that is missing or disagrees with
  the decoded image's ('missing_size' / 'size_mismatch'); the image's size is what counts.

  where: how the annotation names its size, for the message (e.g. '<size>', 'json size').
  """
  declared_h, declared_w = declared
  if declared_h <= 0 or declared_w <= 0:
    problems.report('missing_size', filename,
                    f"{where} is {declared_h}x{declared_w}; using the image's {height}x{width}")
  elif (declared_h, declared_w) != (height, width):
    problems.report('size_mismatch', filename,
                    f'{where} says {declared_h}x{declared_w}, the image is {height}x{width}; '
                    "using the image's")


def clean_boxes(boxes, height, width, problems, filename):
  """Drops or clips boxes that do not fit the image, reporting each case.

  Checks, in order: non-finite coordinates ('invalid_box', dropped), zero width or height
  ('zero_area_box', dropped), max < min ('inverted_box', dropped), entirely outside
  [0, height] x [0, width] ('box_outside_image', dropped), partly outside ('box_clipped',
  clipped to the image).

  Args:
    boxes: float [N, 4] yxyx continuous pixels.
    height, width: the decoded image's size (trusted over any annotation).
    problems: a `Problems`.
    filename: named in the reports.
  Returns:
    (boxes float32 [M, 4] clipped, keep bool [N]) where M = keep.sum().
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  keep = np.ones(len(boxes), bool)
  limits = np.array([height, width, height, width], np.float64)
  clipped = np.clip(boxes, 0.0, limits)
  for i, box in enumerate(boxes):
    text = '[' + ', '.join(f'{v:g}' for v in box) + '] yxyx'
    if not np.all(np.isfinite(box)):
      problems.report('invalid_box', filename, f'box {i} {text} not finite; dropped')
      keep[i] = False
    elif box[2] == box[0] or box[3] == box[1]:
      problems.report('zero_area_box', filename, f'box {i} {text} has zero area; dropped')
      keep[i] = False
    elif box[2] < box[0] or box[3] < box[1]:
      problems.report('inverted_box', filename, f'box {i} {text} is inverted; dropped')
      keep[i] = False
    elif clipped[i, 2] <= clipped[i, 0] or clipped[i, 3] <= clipped[i, 1]:
      problems.report('box_outside_image', filename,
                      f'box {i} {text} outside the {height}x{width} image; dropped')
      keep[i] = False
    elif np.any(clipped[i] != box):
      problems.report('box_clipped', filename,
                      f'box {i} {text} extends outside the {height}x{width} image; clipped')
  return clipped[keep].astype(np.float32), keep
