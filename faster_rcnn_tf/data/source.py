"""The dataset source interface shared by all sources (shapes, voc, coco, tfds, memory).

A source is a random-access list of candidate images; `load(index)` decodes one into a
record (see `records.py`), or returns None when that image has to be skipped (the reason is
reported in `source.problems`). On top of `load`:

  * `records()`   a Python generator of numpy records in source order (decoding in a few
                  threads), skipped images left out (`indexed_records()`: with each
                  image's candidate index);
  * `as_dataset(shuffle_seed=None)`  the same as a `tf.data.Dataset` of records
                  (`RECORD_SIGNATURE`), decoding with a parallel map; with a seed, the order
                  is a seeded permutation that changes each time the dataset is iterated
                  (each epoch), deterministically. Folder sources whose images are all
                  plain JPEGs / PNGs decode them in TF ops there (`graph_decode.py`,
                  `graph_inputs`); others call `load` through `tf.numpy_function`.

Attributes every source has:
    name          the spec string it was made from
    split         the split name
    class_names   list of the K foreground class names; class id i (1..K) is class_names[i-1]
    category_ids  list of K ints: the dataset's own id of class i is category_ids[i-1]
                  (COCO category ids; 1..K for the other sources)
    num_images    number of candidate images (images found unreadable only when decoded are
                  skipped later and reported)
    problems      a `Problems` counter (see `problems.py`)
"""

import collections
import concurrent.futures

import numpy as np
import tensorflow as tf

from faster_rcnn_tf.data import graph_decode
from faster_rcnn_tf.data import records as records_lib
from faster_rcnn_tf.data.problems import Problems


class Source:
  """Base class; subclasses set the attributes above and implement `__len__` and `load`."""

  #: threads used by `records()`; decoding in Pillow releases the GIL.
  decode_threads = 4
  #: let `as_dataset` decode in TF ops when `graph_inputs` allows it (False: always Python).
  decode_in_graph = True

  def __init__(self, name, split, class_names, category_ids=None):
    self.name = name
    self.split = split
    self.class_names = list(class_names)
    self.category_ids = (list(category_ids) if category_ids is not None
                         else list(range(1, len(self.class_names) + 1)))
    self.problems = Problems(name)

  @property
  def num_classes(self):
    return len(self.class_names)

  @property
  def num_images(self):
    return len(self)

  def __len__(self):
    raise NotImplementedError

  def load(self, index):
    """Record of candidate image `index` (0 <= index < num_images), or None if skipped."""
    raise NotImplementedError

  def _finish(self, record, filename):
    """Common last step of `load`: reports images left without objects."""
    if len(record[records_lib.CLASSES]) == 0:
      self.problems.report('no_objects', filename, 'no objects; kept as a background image')
    return record

  def records(self):
    """Yields the numpy records in source order, skipping images that cannot be loaded."""
    for _, record in self.indexed_records():
      yield record

  def indexed_records(self):
    """Yields (candidate index, record) in source order, skipping images not loaded."""
    n = len(self)
    threads = max(1, int(self.decode_threads))
    if threads == 1:
      for i in range(n):
        record = self.load(i)
        if record is not None:
          yield i, record
      return
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      pending = collections.deque()
      next_index = 0
      while next_index < n or pending:
        while next_index < n and len(pending) < 2 * threads:
          pending.append((next_index, pool.submit(self.load, next_index)))
          next_index += 1
        index, future = pending.popleft()
        record = future.result()
        if record is not None:
          yield index, record

  def _load_flat(self, index):
    record = self.load(int(index))
    if record is None:
      return (np.zeros((1, 1, 3), np.uint8), np.zeros((0, 4), np.float32),
              np.zeros((0,), np.int32), np.zeros((0,), bool), np.int64(-1), False)
    return (record[records_lib.IMAGE], record[records_lib.BOXES],
            record[records_lib.CLASSES], record[records_lib.DIFFICULT],
            record[records_lib.IMAGE_ID], True)

  def graph_inputs(self):
    """Keyword arguments of `graph_decode.folder_dataset` (paths, boxes, classes,
    difficult, image_ids, box_format) for a source that can decode in TF ops, else None."""
    return None

  def entry_graph_inputs(self, box_format):
    """`graph_inputs` of a folder source with `image_file(i)` and `_entries` dicts holding
    'boxes', 'classes', 'image_id' and optionally 'difficult'."""
    entries = self._entries
    return dict(paths=[self.image_file(i) for i in range(len(entries))],
                boxes=[e['boxes'] for e in entries], classes=[e['classes'] for e in entries],
                difficult=[e.get('difficult', np.zeros(len(e['classes']), bool))
                           for e in entries],
                image_ids=[e['image_id'] for e in entries], box_format=box_format)

  def _graph_path(self):
    """`graph_inputs()` when every image is plain (`graph_decode.all_plain`), else None;
    decided once."""
    if not self.decode_in_graph:
      return None
    if not hasattr(self, '_graph_inputs'):
      inputs = self.graph_inputs()
      if inputs is not None and not graph_decode.all_plain(inputs['paths']):
        inputs = None
      self._graph_inputs = inputs
    return self._graph_inputs

  @property
  def reports_in_graph(self):
    """Whether `as_dataset` has no Python callback (the pipeline then reports in TF ops)."""
    return self._graph_path() is not None

  def as_dataset(self, shuffle_seed=None):
    """tf.data.Dataset of records (one pass; see the module docstring for shuffling)."""
    inputs = self._graph_path()
    if inputs is not None:
      return graph_decode.folder_dataset(**inputs, shuffle_seed=shuffle_seed)
    n = len(self)
    ds = tf.data.Dataset.range(n)
    if shuffle_seed is not None and n > 1:
      ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)

    def load(index):
      image, boxes, classes, difficult, image_id, valid = tf.numpy_function(
          self._load_flat, [index],
          [tf.uint8, tf.float32, tf.int32, tf.bool, tf.int64, tf.bool])
      return {
          records_lib.IMAGE: tf.ensure_shape(image, [None, None, 3]),
          records_lib.BOXES: tf.ensure_shape(boxes, [None, 4]),
          records_lib.CLASSES: tf.ensure_shape(classes, [None]),
          records_lib.DIFFICULT: tf.ensure_shape(difficult, [None]),
          records_lib.IMAGE_ID: tf.ensure_shape(image_id, []),
          records_lib.ORIGINAL_SIZE: tf.shape(image)[:2],
          '_valid': tf.ensure_shape(valid, []),
      }

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(lambda r: r['_valid'])
    return ds.map(lambda r: {k: v for k, v in r.items() if k != '_valid'})

  def __repr__(self):
    return (f'{type(self).__name__}(name={self.name!r}, split={self.split!r}, '
            f'num_images={len(self)}, classes={self.class_names})')


class InMemorySource(Source):
  """A source over a list of ready records (tests, small experiments).

  image_id is whatever each record carries. Boxes are checked with `clean_boxes` on load.
  """

  decode_threads = 1

  def __init__(self, records, class_names, name='memory', split='train'):
    super().__init__(name, split, class_names)
    self._records = list(records)

  def __len__(self):
    return len(self._records)

  def load(self, index):
    r = self._records[index]
    image = np.asarray(r[records_lib.IMAGE])
    filename = f'record {index}'
    boxes, keep = records_lib.clean_boxes(r[records_lib.BOXES], image.shape[0], image.shape[1],
                                          self.problems, filename)
    classes = np.asarray(r[records_lib.CLASSES]).reshape(-1)[keep]
    difficult = r.get(records_lib.DIFFICULT)
    difficult = None if difficult is None else np.asarray(difficult).reshape(-1)[keep]
    record = records_lib.make_record(image, boxes, classes, difficult,
                                     r.get(records_lib.IMAGE_ID, index))
    return self._finish(record, filename)
