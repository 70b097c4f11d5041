"""Train / val splits of data that comes without split files, by a hash of each image's key.

A folder without split files (a VOC folder without ImageSets/, a LabelImg or YOLO folder)
or a set of TFRecord files is one split, 'all'. Its 'train' and 'val' splits are decided
image by image: an image is in 'val' when

    tf.strings.to_hash_bucket_fast(key, HASH_BUCKETS) < round(val_fraction * HASH_BUCKETS)

and in 'train' otherwise. 'test' is another name of 'val' (the held-out images), so the
usual train / test pair of flags works on such data too. `key` is a string naming the
image within the data (its file name without extension, relative to the image folder;
each source documents it). The rule depends on nothing but the key, so:
  * two runs (any machine: the hash is TensorFlow's stable 64-bit fingerprint) agree;
  * adding images never moves an existing image to the other side;
  * Python (folder sources, here) and tf.data graphs (`tfrecord:`) give the same answer.
"""

import sys

import numpy as np
import tensorflow as tf

HASH_BUCKETS = 1_000_000
DEFAULT_VAL_FRACTION = 0.1
#: the splits a split-less source has ('test' is 'val').
SPLITLESS_SPLITS = ('all', 'train', 'val', 'test')


def check_val_fraction(val_fraction):
  """Raises ValueError unless 0 <= val_fraction <= 1."""
  if not 0.0 <= float(val_fraction) <= 1.0:
    raise ValueError(f'--val_fraction must be in [0, 1], got {val_fraction}')


def _threshold(val_fraction):
  check_val_fraction(val_fraction)
  return int(round(float(val_fraction) * HASH_BUCKETS))


def is_val(keys, val_fraction=DEFAULT_VAL_FRACTION):
  """bool [N] numpy: which of the N string keys fall on the 'val' side."""
  keys = [str(k) for k in keys]
  if not keys:
    return np.zeros(0, bool)
  buckets = tf.strings.to_hash_bucket_fast(tf.constant(keys, tf.string), HASH_BUCKETS)
  return buckets.numpy() < _threshold(val_fraction)


def in_split_tf(key, split, val_fraction=DEFAULT_VAL_FRACTION):
  """bool tensor: whether images of string keys `key` belong to `split` (TF ops)."""
  if split == 'all':
    return tf.ones_like(key, tf.bool) if key.shape.rank else tf.constant(True)
  val = is_val_tf(key, val_fraction)
  return val if split in ('val', 'test') else tf.logical_not(val)


def is_val_tf(key, val_fraction=DEFAULT_VAL_FRACTION):
  """The same rule in TF ops: bool tensor of a string tensor's shape."""
  return tf.strings.to_hash_bucket_fast(key, HASH_BUCKETS) < _threshold(val_fraction)


def select(keys, split, val_fraction=DEFAULT_VAL_FRACTION):
  """Indices (into `keys`) of the images of `split` ('all', 'train', 'val' or 'test' (the
  same as 'val')), in order.

  Raises:
    ValueError: another split name.
  """
  if split == 'all':
    return list(range(len(keys)))
  if split not in SPLITLESS_SPLITS:
    raise ValueError(f'split {split!r}: data without split files has the splits '
                     f'{list(SPLITLESS_SPLITS)} (train / val by a hash of each image, '
                     f'--val_fraction; test is val)')
  val = is_val(keys, val_fraction)
  want = split in ('val', 'test')
  return [i for i, v in enumerate(val) if bool(v) == want]


def describe(where, split, count, total, val_fraction):
  """The one line that says a split was made by hashing (printed by `announce`)."""
  return (f'{where}: no split files; split {split!r} is {count} of {total} images, chosen '
          f'by a hash of each image name (val_fraction={val_fraction:g}; the same in every '
          f'run and when images are added)')


def announce(where, split, count, total, val_fraction):
  """Writes `describe`'s line to stderr (what a hashed split contains is never silent)."""
  sys.stderr.write(describe(where, split, count, total, val_fraction) + '\n')
  sys.stderr.flush()
