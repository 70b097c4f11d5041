"""Folder sources decoded in TF ops: annotations parsed once up front, images read and
decoded in the tf.data graph (no Python callback, so no interpreter lock on the hot path).

A folder source (voc, yolo, coco) uses this path for `as_dataset` when every image of its
split is a plain 8-bit RGB or grayscale JPEG or PNG (checked from the file headers once,
on the first `as_dataset` call): for those, TensorFlow's decoders give Pillow's pixels
exactly (JPEG with the accurate integer DCT, see `decode_tf`), and the boxes are
cleaned with `records.clean_boxes`' rules in TF ops, so the records equal `records()`'s.
Any other image (CMYK, 16-bit, palette, alpha, other formats, unreadable headers) keeps
the whole split on the Python path (`source.Source.as_dataset`), whose Pillow decoding
converts and reports them.

On the graph path problems are not reported while training (images TensorFlow cannot
decode are skipped with tf.data's warning); `records()` (inspect, evaluation's ground
truth, convert) still goes through Python and reports every problem.
"""

import numpy as np
import tensorflow as tf
from PIL import Image

from faster_rcnn_tf.data import records as R

#: box layouts of `folder_dataset`'s boxes.
BOX_FORMATS = ('yxyx', 'cxcywh')


def plain_image(path):
  """Whether an image file is an 8-bit RGB or grayscale JPEG or PNG (header only)."""
  try:
    with Image.open(path) as image:
      if image.format not in ('JPEG', 'PNG') or image.mode not in ('RGB', 'L'):
        return False
      if image.format == 'PNG':
        with open(path, 'rb') as f:
          header = f.read(26)
        return len(header) == 26 and header[24] == 8  # IHDR bit depth
      return True
  except Exception:  # pylint: disable=broad-except
    return False


def all_plain(paths):
  """Whether every file of `paths` is a `plain_image`."""
  return all(plain_image(p) for p in paths)


def decode_tf(encoded):
  """uint8 [H, W, 3] RGB of encoded image bytes, in TF ops.

  JPEGs are decoded with the accurate integer DCT, which gives Pillow's pixels (the folder
  sources' decoder; TensorFlow's default fast DCT differs by a few levels), so a converted
  dataset trains on the pixels its folder did. Other formats via `tf.io.decode_image`.
  """
  image = tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method='INTEGER_ACCURATE'),
      lambda: tf.io.decode_image(encoded, channels=3, dtype=tf.uint8,
                                 expand_animations=False))
  return tf.ensure_shape(image, [None, None, 3])


def _ragged(rows, dtype, width=None):
  lengths = np.array([len(r) for r in rows], np.int64)
  shape = (-1, width) if width else (-1,)
  values = (np.concatenate([np.asarray(r, dtype).reshape(shape) for r in rows])
            if rows else np.zeros((0,) + shape[1:], dtype))
  return tf.RaggedTensor.from_row_lengths(values, lengths)


def folder_dataset(paths, boxes, classes, difficult, image_ids, box_format='yxyx',
                   shuffle_seed=None):
  """tf.data.Dataset of records (`records.RECORD_SIGNATURE`), decoding in TF ops.

  Args:
    paths: N image file paths.
    boxes: N float arrays [Mi, 4]: 'yxyx' pixels of the image, or 'cxcywh' normalized
      (YOLO), converted with the decoded size.
    classes: N int arrays [Mi], 1..K.
    difficult: N bool arrays [Mi].
    image_ids: N ints.
    box_format: 'yxyx' or 'cxcywh'.
    shuffle_seed: None, or the seed of a permutation of the images that changes each
      epoch (the same permutation as the Python path's for the same seed).
  Returns:
    the dataset.
  """
  if box_format not in BOX_FORMATS:
    raise ValueError(f'box_format {box_format!r}: expected one of {BOX_FORMATS}')
  n = len(paths)
  ds = tf.data.Dataset.from_tensor_slices((
      tf.constant(list(paths), tf.string), _ragged(boxes, np.float64, 4),
      _ragged(classes, np.int32), _ragged(difficult, bool),
      tf.constant(np.asarray(image_ids, np.int64).reshape(-1))))
  if shuffle_seed is not None and n > 1:
    ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)

  def load(path, boxes_, classes_, difficult_, image_id):
    image = decode_tf(tf.io.read_file(path))
    size = tf.shape(image)[:2]
    hw = tf.cast(tf.tile(size, [2]), tf.float64)
    if box_format == 'cxcywh':
      cx, cy, w, h = tf.unstack(tf.reshape(boxes_, [-1, 4]), axis=1)
      height, width = hw[0], hw[1]
      boxes_ = tf.stack([(cy - h / 2) * height, (cx - w / 2) * width,
                         (cy + h / 2) * height, (cx + w / 2) * width], axis=1)
    boxes_ = tf.reshape(boxes_, [-1, 4])
    finite = tf.reduce_all(tf.math.is_finite(boxes_), axis=1)
    positive = (boxes_[:, 2] > boxes_[:, 0]) & (boxes_[:, 3] > boxes_[:, 1])
    clipped = tf.clip_by_value(boxes_, tf.zeros_like(hw), hw)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    keep = finite & positive & inside
    return {
        R.IMAGE: image,
        R.BOXES: tf.cast(tf.boolean_mask(clipped, keep), tf.float32),
        R.CLASSES: tf.boolean_mask(classes_, keep),
        R.DIFFICULT: tf.boolean_mask(difficult_, keep),
        R.IMAGE_ID: image_id,
        R.ORIGINAL_SIZE: size,
    }

  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.ignore_errors(log_warning=True)
