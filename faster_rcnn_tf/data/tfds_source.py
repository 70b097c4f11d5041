"""TensorFlow Datasets source (`tfds:NAME`, e.g. `tfds:voc/2007`, `tfds:coco/2017`).

Reads data already prepared in `data_dir` (never downloads: `download=False`); when it is
not there, `DataNotPreparedError` says what to put where. Works with detection datasets
whose features have 'image' and 'objects' {'bbox' (tfds BBoxFeature: [ymin, xmin, ymax,
xmax] normalized to [0, 1]), 'label' (ClassLabel)} and optionally objects/'is_difficult',
objects/'is_crowd', 'image/id', 'image/filename'.

Boxes are bbox * (height, width, height, width) of the decoded image: continuous pixels.
Classes: the ClassLabel names in label order give ids 1..K (tfds label + 1), or `classes`
picks and orders a subset (others dropped, 'unknown_class'). Crowd objects are dropped
('crowd_box'), difficult ones kept and flagged. category_ids are 1..K.

image_id: 'image/id' when the dataset has it (COCO's id for coco); otherwise the number in
the file name stem when it is all digits (VOC's '000005.jpg' -> 5); otherwise a stable
63-bit hash of the file name (or of the example's tfds id when there is no file name).

`as_dataset` decodes with `tf.io.decode_image` in a parallel map (channels=3, so grayscale
becomes RGB); random access (`load`) is not supported.
"""

import hashlib
import os
import re

import numpy as np
import tensorflow as tf

from faster_rcnn_tf.data import records as records_lib
from faster_rcnn_tf.data.source import Source

_SHUFFLE_BUFFER = 1024  # encoded examples, after file-level shuffling


class DataNotPreparedError(FileNotFoundError):
  """The TFDS dataset is not prepared in the given data_dir."""


def _stable_id(text):
  digest = hashlib.sha1(text.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') & 0x7FFFFFFFFFFFFFFF


def image_id_from_name(filename, tfds_id=''):
  """The image_id rule for datasets without 'image/id' (see module docstring)."""
  stem = os.path.splitext(os.path.basename(filename))[0]
  if re.fullmatch(r'\d{1,18}', stem):
    return int(stem)
  return _stable_id(filename or tfds_id)


class TfdsSource(Source):
  """TFDS-backed source; see the module docstring."""

  def __init__(self, dataset_name, split='train', classes=None, data_dir=None, name=None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self._tfds = tfds
    try:
      builder = tfds.builder(dataset_name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise ValueError(f'tfds:{dataset_name}: no such TFDS dataset '
                       f'({str(e).splitlines()[0]})') from e
    if not builder.is_prepared():
      root = str(data_dir or builder.data_dir_root)
      raise DataNotPreparedError(
          f'TFDS dataset {dataset_name!r} is not prepared in data_dir={root!r} (looked for '
          f'{builder.data_dir}/dataset_info.json). Pass --data_dir=DIR where DIR holds the '
          f'prepared data (DIR/{dataset_name}/<version>/ with dataset_info.json and the '
          f'tfrecord files). To make it, run `tfds build {dataset_name} --data_dir=DIR` on a '
          'machine with internet access (some datasets also need files downloaded by hand, '
          'see the TFDS catalog), then copy DIR here; this code never downloads.')
    self.builder = builder
    features = builder.info.features
    if 'image' not in features or 'objects' not in features:
      raise ValueError(f'tfds:{dataset_name} is not a detection dataset: features are '
                       f'{list(features.keys())}')
    objects = features['objects']
    label_names = list(objects['label'].names)
    if classes is None:
      class_names = label_names
    else:
      missing = [c for c in classes if c not in label_names]
      if missing:
        raise ValueError(f'classes {missing} are not labels of tfds:{dataset_name}: '
                         f'{label_names}')
      class_names = list(classes)
    super().__init__(name or f'tfds:{dataset_name}', split, class_names)
    index = {n: i + 1 for i, n in enumerate(self.class_names)}
    self._label_to_class = np.array([index.get(n, 0) for n in label_names], np.int32)
    self._label_names = label_names
    self._has_difficult = 'is_difficult' in objects.keys()
    self._has_crowd = 'is_crowd' in objects.keys()
    self._has_id = 'image/id' in features
    self._has_filename = 'image/filename' in features
    self._num_images = builder.info.splits[split].num_examples

  def __len__(self):
    return self._num_images

  def load(self, index):
    raise NotImplementedError('TfdsSource has no random access; use records() / as_dataset()')

  def _clean(self, boxes, labels, difficult, crowd, height, width, image_id, filename, tfds_id):
    """numpy side of `as_dataset`: maps labels, reports and drops/clips boxes."""
    filename = filename.decode('utf-8') if isinstance(filename, bytes) else str(filename)
    tfds_id = tfds_id.decode('utf-8') if isinstance(tfds_id, bytes) else str(tfds_id)
    if not self._has_id:
      image_id = image_id_from_name(filename, tfds_id)
    name = filename or tfds_id or f'image_id {image_id}'
    classes = self._label_to_class[labels] if len(labels) else np.zeros(0, np.int32)
    keep = np.ones(len(labels), bool)
    for i, label in enumerate(labels):
      if classes[i] == 0:
        self.problems.report('unknown_class', name, f'object {i} {self._label_names[label]!r} '
                             f'not in {self.class_names}; dropped')
        keep[i] = False
      elif crowd[i]:
        self.problems.report('crowd_box', name, f'object {i}: is_crowd; dropped')
        keep[i] = False
    clean, kept = records_lib.clean_boxes(boxes[keep], int(height), int(width),
                                          self.problems, name)
    classes = classes[keep][kept]
    if len(classes) == 0:
      self.problems.report('no_objects', name, 'no objects; kept as a background image')
    return clean, classes.astype(np.int32), difficult[keep][kept], np.int64(image_id)

  def as_dataset(self, shuffle_seed=None):
    tfds = self._tfds
    shuffle = shuffle_seed is not None
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed if shuffle else None,
                                  add_tfds_id=True)
    ds = self.builder.as_dataset(split=self.split, shuffle_files=shuffle,
                                 read_config=read_config,
                                 decoders={'image': tfds.decode.SkipDecoding()})
    if shuffle:
      ds = ds.shuffle(_SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)

    def convert(example):
      image = tf.io.decode_image(example['image'], channels=3, expand_animations=False)
      image = tf.ensure_shape(image, [None, None, 3])
      shape = tf.shape(image)
      objects = example['objects']
      scale = tf.cast(tf.stack([shape[0], shape[1], shape[0], shape[1]]), tf.float32)
      boxes = tf.reshape(tf.cast(objects['bbox'], tf.float32), [-1, 4]) * scale
      labels = tf.cast(objects['label'], tf.int64)
      num = tf.shape(labels)[0]
      difficult = (tf.cast(objects['is_difficult'], tf.bool) if self._has_difficult
                   else tf.zeros([num], tf.bool))
      crowd = (tf.cast(objects['is_crowd'], tf.bool) if self._has_crowd
               else tf.zeros([num], tf.bool))
      image_id = (tf.cast(example['image/id'], tf.int64) if self._has_id
                  else tf.constant(-1, tf.int64))
      filename = example['image/filename'] if self._has_filename else tf.constant('')
      boxes, classes, difficult, image_id = tf.numpy_function(
          self._clean,
          [boxes, labels, difficult, crowd, shape[0], shape[1], image_id, filename,
           example['tfds_id']],
          [tf.float32, tf.int32, tf.bool, tf.int64])
      return {
          records_lib.IMAGE: image,
          records_lib.BOXES: tf.ensure_shape(boxes, [None, 4]),
          records_lib.CLASSES: tf.ensure_shape(classes, [None]),
          records_lib.DIFFICULT: tf.ensure_shape(difficult, [None]),
          records_lib.IMAGE_ID: tf.ensure_shape(image_id, []),
          records_lib.ORIGINAL_SIZE: shape[:2],
      }

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def records(self):
    yield from self.as_dataset().as_numpy_iterator()
