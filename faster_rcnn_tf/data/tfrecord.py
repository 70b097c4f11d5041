"""TFRecord source in the TF Object Detection API's schema (`tfrecord:GLOB`).

Each record is a `tf.train.Example` with the features (`SCHEMA`; absent optional ones take
their default):

    image/encoded             bytes    the encoded image (JPEG, PNG, GIF or BMP)     required
    image/format              bytes    'jpeg' / 'png' (informative; the content decides)
    image/height, image/width int64    the image size (checked against the decoded one)
    image/filename            bytes    file name; without its extension it is the key that
                                       splits hash (`splits.py`)
    image/source_id           bytes    the image's id: image_id = int(source_id) when it is
                                       a decimal integer, else a 62-bit hash of it
    image/object/bbox/xmin, ymin, xmax, ymax  float [N]  normalized to [0, 1]
    image/object/class/label  int64 [N]  label map id (with a label map)
    image/object/class/text   bytes [N]  class name (without a label map)
    image/object/difficult    int64 [N]  optional, 0 / 1
    image/object/is_crowd     int64 [N]  optional; crowd boxes are dropped ('crowd_box')

Classes: with `label_map` (a label_map.pbtxt, `label_map.py`), class_names are its names
in id order, category_ids its ids, and objects are classified by `class/label`. Without,
class_names are the sorted set of `class/text` values over the files, category_ids 1..K,
and objects are classified by text. `classes` restricts and orders them; objects of other
classes are dropped ('unknown_class').

Splits: the files of the glob are split 'all'; 'train' and 'val' (or 'test') follow the
hash rule of data without split files (`splits.py`, `val_fraction`) on each record's key
(file name without extension, or the source_id when there is no file name).

`as_dataset` runs in TensorFlow ops only (parse, decode, box cleaning; no Python callback),
so tf.data service can run it remotely, and it starts from the file list, so under
`multi_worker` tf.data's automatic sharding gives each worker its own files (with at least
as many files as workers; with fewer it falls back to sharding records). Images that fail
to decode there are skipped with tf.data's warning. `records()` (inspection, conversion,
evaluation ground truth) decodes the same way but cleans boxes in Python and reports each
problem in `problems` (see `problems.py`); both give the same records.
"""

import glob as glob_lib
import os

import numpy as np
import tensorflow as tf

from faster_rcnn_tf.data import graph_decode
from faster_rcnn_tf.data import label_map as label_map_lib
from faster_rcnn_tf.data import records as records_lib
from faster_rcnn_tf.data import splits
from faster_rcnn_tf.data.source import Source

ENCODED = 'image/encoded'
FORMAT = 'image/format'
HEIGHT = 'image/height'
WIDTH = 'image/width'
FILENAME = 'image/filename'
SOURCE_ID = 'image/source_id'
KEY_SHA256 = 'image/key/sha256'
XMIN = 'image/object/bbox/xmin'
YMIN = 'image/object/bbox/ymin'
XMAX = 'image/object/bbox/xmax'
YMAX = 'image/object/bbox/ymax'
LABEL = 'image/object/class/label'
TEXT = 'image/object/class/text'
DIFFICULT = 'image/object/difficult'
IS_CROWD = 'image/object/is_crowd'

#: feature key -> (kind, dtype): 'scalar' features hold one value, 'list' ones N (one per
#: object). The Object Detection API's readers take these keys with these types.
SCHEMA = {
    ENCODED: ('scalar', tf.string), FORMAT: ('scalar', tf.string),
    HEIGHT: ('scalar', tf.int64), WIDTH: ('scalar', tf.int64),
    FILENAME: ('scalar', tf.string), SOURCE_ID: ('scalar', tf.string),
    KEY_SHA256: ('scalar', tf.string),
    XMIN: ('list', tf.float32), YMIN: ('list', tf.float32),
    XMAX: ('list', tf.float32), YMAX: ('list', tf.float32),
    LABEL: ('list', tf.int64), TEXT: ('list', tf.string),
    DIFFICULT: ('list', tf.int64), IS_CROWD: ('list', tf.int64),
}
_DEFAULTS = {tf.string: '', tf.int64: -1}
_ID_HASH_BUCKETS = 2 ** 62


def _feature_spec(keys):
  spec = {}
  for key in keys:
    kind, dtype = SCHEMA[key]
    if kind == 'scalar':
      spec[key] = tf.io.FixedLenFeature([], dtype, default_value=_DEFAULTS[dtype])
    else:
      spec[key] = tf.io.VarLenFeature(dtype)
  return spec


_RECORD_KEYS = (ENCODED, HEIGHT, WIDTH, FILENAME, SOURCE_ID, XMIN, YMIN, XMAX, YMAX, LABEL,
                TEXT, DIFFICULT, IS_CROWD)


def _dense(parsed, key):
  value = parsed[key]
  return tf.sparse.to_dense(value) if isinstance(value, tf.SparseTensor) else value


def split_key(filename, source_id):
  """The key that splits hash (TF ops): the file name without its extension, or the
  source_id when the file name is empty."""
  stem = tf.strings.regex_replace(filename, r'\.[^./]*$', '')
  return tf.where(tf.strings.length(filename) > 0, stem, source_id)


def image_id_of(source_id):
  """int64 image_id from a source_id string (TF ops; see the module docstring)."""
  numeric = tf.strings.regex_full_match(source_id, r'[0-9]{1,18}')
  safe = tf.where(numeric, source_id, '0')
  return tf.where(numeric, tf.strings.to_number(safe, tf.int64),
                  tf.strings.to_hash_bucket_fast(source_id, _ID_HASH_BUCKETS))


def _fit(values, n, dtype):
  """values [M] padded with zeros / cut to [n] (optional per-object features)."""
  values = tf.cast(values, dtype)
  values = tf.pad(values, [[0, tf.maximum(n - tf.shape(values)[0], 0)]])
  return values[:n]


class TfRecordSource(Source):
  """Object Detection API TFRecords; see the module docstring.

  Args:
    pattern: file glob (or a single file; several globs separated by ',').
    split: 'all', 'train' or 'val' ('test').
    classes: optional class names (restrict and order).
    name: the spec string.
    label_map: optional label_map.pbtxt path.
    val_fraction: share of 'val' (`splits.py`).
    shuffle_buffer: records shuffled together in training (after the files are shuffled).
    cycle_length: files read at the same time.
  """

  #: the pipeline reports in graph ops (no Python callback in its graph).
  reports_in_graph = True

  def __init__(self, pattern, split='all', classes=None, name=None, label_map=None,
               val_fraction=splits.DEFAULT_VAL_FRACTION, shuffle_buffer=1024, cycle_length=4):
    files = sorted({f for p in pattern.split(',') if p for f in glob_lib.glob(
        os.path.expanduser(p))})
    if not files:
      raise FileNotFoundError(f'no TFRecord file matches {pattern!r}')
    if split not in splits.SPLITLESS_SPLITS:
      raise ValueError(f'split {split!r}: the files of a tfrecord: dataset are split '
                       f"'all'; 'train' / 'val' ('test') are chosen by a hash of each image's "
                       f'file name (--val_fraction)')
    splits.check_val_fraction(val_fraction)
    self.files = files
    self.pattern = pattern
    self.val_fraction = float(val_fraction)
    self.shuffle_buffer = int(shuffle_buffer)
    self.cycle_length = int(cycle_length)
    self._count = None
    if label_map:
      items = label_map_lib.read_label_map(label_map)
      by_name = {i['name']: i['id'] for i in items}
      names = [i['name'] for i in items]
      if classes is not None:
        missing = [c for c in classes if c not in by_name]
        if missing:
          raise ValueError(f'classes {missing} are not in the label map {label_map} '
                           f'({names})')
        names = list(classes)
      super().__init__(name or f'tfrecord:{pattern}', split, names,
                       [by_name[n] for n in names])
      self.by_label = True
    else:
      super().__init__(name or f'tfrecord:{pattern}', split,
                       classes if classes is not None else self._texts())
      self.by_label = False
      if not self.class_names:
        raise ValueError(f'{pattern}: the records name no class (no '
                         f'{TEXT}); give a label map (--label_map=label_map.pbtxt)')
    if split != 'all':
      splits.announce(pattern, split, self.num_images, self._count_all, val_fraction)

  # ---- the parsed record stream (shared by as_dataset and records) ----

  def _files_dataset(self, shuffle_seed):
    ds = tf.data.Dataset.from_tensor_slices(self.files)
    if shuffle_seed is not None and len(self.files) > 1:
      ds = ds.shuffle(len(self.files), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(self.cycle_length,
                                                                   len(self.files)),
                       block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True)
    return ds

  def _in_split(self, key):
    return splits.in_split_tf(key, self.split, self.val_fraction)

  def _parse(self, serialized):
    """Parsed features of one record, classified (TF ops)."""
    p = tf.io.parse_single_example(serialized, _feature_spec(_RECORD_KEYS))
    boxes = tf.stack([_dense(p, YMIN), _dense(p, XMIN), _dense(p, YMAX), _dense(p, XMAX)],
                     axis=-1)
    n = tf.shape(boxes)[0]
    if self.by_label:
      labels = _dense(p, LABEL)
      lut = np.zeros(max(self.category_ids) + 1, np.int32)
      lut[self.category_ids] = np.arange(1, len(self.category_ids) + 1)
      inside = (labels >= 0) & (labels < len(lut))
      classes = tf.where(inside, tf.gather(lut, tf.clip_by_value(labels, 0, len(lut) - 1)),
                         0)
      names = tf.strings.as_string(labels)
    else:
      names = _dense(p, TEXT)
      table = tf.constant(self.class_names, tf.string)
      match = tf.equal(names[:, None], table[None, :])
      classes = tf.where(tf.reduce_any(match, axis=1),
                         tf.cast(tf.argmax(tf.cast(match, tf.int32), axis=1), tf.int32) + 1,
                         0)
    classes = _fit(classes, n, tf.int32)
    names = tf.pad(names, [[0, tf.maximum(n - tf.shape(names)[0], 0)]])[:n]
    return {
        'encoded': p[ENCODED],
        'key': split_key(p[FILENAME], p[SOURCE_ID]),
        'filename': p[FILENAME],
        'source_id': p[SOURCE_ID],
        'image_id': image_id_of(p[SOURCE_ID]),
        'declared_size': tf.cast(tf.stack([p[HEIGHT], p[WIDTH]]), tf.int32),
        'boxes_normalized': tf.reshape(boxes, [-1, 4]),
        'classes': classes,
        'class_names': names,
        'difficult': _fit(_dense(p, DIFFICULT), n, tf.int64) > 0,
        'crowd': _fit(_dense(p, IS_CROWD), n, tf.int64) > 0,
    }

  def _parsed_dataset(self, shuffle_seed=None):
    ds = self._files_dataset(shuffle_seed)
    if shuffle_seed is not None:
      ds = ds.shuffle(self.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.map(self._parse, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.filter(lambda p: self._in_split(p['key']))

  # ---- counting, class texts ----

  def _read_all(self, dataset):
    """numpy elements of a pass over the files; ValueError naming the pattern when the
    files are not TFRecords of this schema (one line for the scripts, no traceback)."""
    try:
      return list(dataset.as_numpy_iterator())
    except tf.errors.OpError as e:
      first = (e.message or type(e).__name__).splitlines()[0]
      raise ValueError(f'{self.pattern}: cannot read the records as Object Detection API '
                       f'tf.train.Examples: {first}') from None

  def _texts(self):
    ds = self._files_dataset(None).map(
        lambda s: tf.io.parse_single_example(s, _feature_spec([TEXT]))[TEXT].values,
        num_parallel_calls=tf.data.AUTOTUNE)
    names = set()
    for texts in self._read_all(ds):
      names.update(t.decode('utf-8') for t in texts)
    return sorted(names)

  def _counts(self):
    if self._count is None:
      def keys(serialized):
        p = tf.io.parse_single_example(serialized, _feature_spec([FILENAME, SOURCE_ID]))
        return self._in_split(split_key(p[FILENAME], p[SOURCE_ID]))
      ds = self._files_dataset(None).map(keys, num_parallel_calls=tf.data.AUTOTUNE)
      inside = np.array(self._read_all(ds), bool).reshape(-1)
      self._count = (int(inside.sum()), len(inside))
    return self._count

  @property
  def _count_all(self):
    return self._counts()[1]

  def __len__(self):
    return self._counts()[0]

  def load(self, index):
    raise NotImplementedError('TFRecords are read in order: use records() or as_dataset()')

  # ---- the TF path ----

  def _decode(self, p):
    """Record of parsed features, boxes cleaned as `records.clean_boxes` does (TF ops)."""
    image = graph_decode.decode_tf(p['encoded'])
    size = tf.shape(image)[:2]
    hw = tf.cast(tf.tile(size, [2]), tf.float32)
    boxes = p['boxes_normalized'] * hw
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=1)
    positive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    clipped = tf.clip_by_value(boxes, 0.0, hw)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    keep = (p['classes'] > 0) & tf.logical_not(p['crowd']) & finite & positive & inside
    return {
        records_lib.IMAGE: image,
        records_lib.BOXES: tf.boolean_mask(clipped, keep),
        records_lib.CLASSES: tf.boolean_mask(p['classes'], keep),
        records_lib.DIFFICULT: tf.boolean_mask(p['difficult'], keep),
        records_lib.IMAGE_ID: p['image_id'],
        records_lib.ORIGINAL_SIZE: size,
    }

  def as_dataset(self, shuffle_seed=None):
    """tf.data.Dataset of records (`records.RECORD_SIGNATURE`), in TF ops only."""
    ds = self._parsed_dataset(shuffle_seed)
    ds = ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.ignore_errors(log_warning=True)

  # ---- the Python path, with problem reports ----

  def records(self):
    """The records in `as_dataset()` order, each problem reported in `problems`."""
    for p in self._parsed_dataset(None).as_numpy_iterator():
      filename = p['filename'].decode('utf-8', 'replace') or \
          p['source_id'].decode('utf-8', 'replace')
      record = self._python_record(p, filename)
      if record is not None:
        yield record

  def _python_record(self, p, filename):
    try:
      image = graph_decode.decode_tf(tf.constant(p['encoded'])).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
      self.problems.report('unreadable_image', filename,
                           f'{e.message.splitlines()[0]}; skipped')
      return None
    height, width = image.shape[:2]
    declared = tuple(int(v) for v in p['declared_size'])
    records_lib.check_declared_size(declared, height, width, self.problems, filename,
                                    f'{HEIGHT} / {WIDTH}')
    keep = np.ones(len(p['classes']), bool)
    for i, (cls, crowd) in enumerate(zip(p['classes'], p['crowd'])):
      name = p['class_names'][i].decode('utf-8', 'replace')
      if cls == 0:
        self.problems.report('unknown_class', filename,
                             f'object {i} {name!r}: class not in {self.class_names}; '
                             'dropped')
        keep[i] = False
      elif crowd:
        self.problems.report('crowd_box', filename, f'object {i}: is_crowd=1; dropped')
        keep[i] = False
    hw = np.array([height, width, height, width], np.float32)
    boxes = p['boxes_normalized'][keep] * hw
    boxes, kept = records_lib.clean_boxes(boxes, height, width, self.problems, filename)
    record = records_lib.make_record(image, boxes, p['classes'][keep][kept],
                                     p['difficult'][keep][kept], p['image_id'])
    return self._finish(record, filename)
