"""Writes any dataset split as TFRecords in the TF Object Detection API's schema.

    python -m faster_rcnn_tf.data.convert --dataset=SPEC --split=SPLIT --output=PREFIX \\
        [--num_shards=N] [--classes=a,b] [--val_fraction=0.1] [--label_map=FILE]

Writes
    PREFIX-00000-of-0000N.tfrecord ...   record k of the split goes to shard k % N
    PREFIX-summary.json                  what was written and the problems met (the
                                         `problems` of `inspect`'s summary of the split)
    <folder of PREFIX>/label_map.pbtxt   the classes (`label_map.py`)
and prints the summary as one JSON line. Read the shards back with
`--dataset=tfrecord:PREFIX-*.tfrecord --label_map=<folder>/label_map.pbtxt`.

Each record is the source's record after its cleaning (`tfrecord.SCHEMA` for the keys):
boxes normalized by the image size, class/label = the class's category id (the label
map's id), class/text = its name, difficult, is_crowd = 0, source_id = the image_id,
filename = the image's key (the name split hashing uses) plus the extension of the stored
format. The image is stored as its original file's bytes when TensorFlow decodes those to
exactly the source's pixels (JPEG or PNG files that needed no conversion); otherwise as a
PNG of the source's pixels. So reading back gives the same pixels, boxes (to float32
rounding of the normalized coordinates) and classes.
"""

import hashlib
import json
import os
import sys

import numpy as np
import tensorflow as tf
from absl import flags

from faster_rcnn_tf import cli
from faster_rcnn_tf.data import decode
from faster_rcnn_tf.data import graph_decode
from faster_rcnn_tf.data import label_map as label_map_lib
from faster_rcnn_tf.data import records as R
from faster_rcnn_tf.data import registry
from faster_rcnn_tf.data import tfrecord

_STORED_FORMATS = {'JPEG': ('jpeg', '.jpg'), 'PNG': ('png', '.png')}


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def encoded_image(record, path=None):
  """(encoded bytes, format name 'jpeg' / 'png', extension) for a record's image.

  The file at `path` when TensorFlow decodes it to exactly the record's pixels, else a
  PNG of the pixels.
  """
  image = record[R.IMAGE]
  if path is not None:
    try:
      with open(path, 'rb') as f:
        data = f.read()
    except OSError:
      data = None
    stored = _STORED_FORMATS.get(decode.sniff_format(data or b''))
    if stored is not None:
      try:
        decoded = graph_decode.decode_tf(tf.constant(data)).numpy()
      except tf.errors.OpError:
        decoded = None
      if decoded is not None and decoded.shape == image.shape and np.array_equal(
          decoded, image):
        return data, stored[0], stored[1]
  return tf.io.encode_png(image).numpy(), 'png', '.png'


def make_example(record, key, class_names, category_ids, path=None):
  """The tf.train.Example of one record (see the module docstring).

  Args:
    record: a source record (`records.py`).
    key: the image's key (split hashing; becomes the file name without extension).
    class_names, category_ids: the source's.
    path: the image's original file, when there is one.
  Returns:
    tf.train.Example.
  """
  data, fmt, ext = encoded_image(record, path)
  height, width = (int(v) for v in record[R.IMAGE].shape[:2])
  boxes = np.asarray(record[R.BOXES], np.float64).reshape(-1, 4)
  scale = np.array([height, width, height, width], np.float64)
  normalized = (boxes / scale).astype(np.float32)
  classes = np.asarray(record[R.CLASSES]).reshape(-1)
  feature = {
      tfrecord.ENCODED: _bytes([data]),
      tfrecord.FORMAT: _bytes([fmt.encode()]),
      tfrecord.HEIGHT: _ints([height]),
      tfrecord.WIDTH: _ints([width]),
      tfrecord.FILENAME: _bytes([(key + ext).encode('utf-8')]),
      tfrecord.SOURCE_ID: _bytes([str(int(record[R.IMAGE_ID])).encode()]),
      tfrecord.KEY_SHA256: _bytes([hashlib.sha256(data).hexdigest().encode()]),
      tfrecord.YMIN: _floats(normalized[:, 0]),
      tfrecord.XMIN: _floats(normalized[:, 1]),
      tfrecord.YMAX: _floats(normalized[:, 2]),
      tfrecord.XMAX: _floats(normalized[:, 3]),
      tfrecord.LABEL: _ints(int(category_ids[c - 1]) for c in classes),
      tfrecord.TEXT: _bytes(class_names[c - 1].encode('utf-8') for c in classes),
      tfrecord.DIFFICULT: _ints(int(d) for d in record[R.DIFFICULT]),
      tfrecord.IS_CROWD: _ints([0] * len(classes)),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature))


def _records_with_keys(source):
  """(record, key, original file or None) of each loadable image of a source."""
  if not hasattr(source, 'image_key'):
    for record in source.records():
      yield record, str(int(record[R.IMAGE_ID])), None
    return
  for index, record in source.indexed_records():
    path = source.image_file(index) if hasattr(source, 'image_file') else None
    yield record, source.image_key(index), path


def shard_paths(output, num_shards):
  """The shard file names of PREFIX."""
  return [f'{output}-{i:05d}-of-{num_shards:05d}.tfrecord' for i in range(num_shards)]


def convert(source, output, num_shards=1):
  """Writes a source's split as TFRecords (see the module docstring); returns the summary.

  Args:
    source: a dataset source.
    output: the PREFIX of the written files.
    num_shards: number of TFRecord files.
  Returns:
    dict: dataset, split, class_names, category_ids, candidate_images, images,
    skipped_images, objects, per_class, shards (paths), label_map (path), problems.
  """
  if num_shards < 1:
    raise ValueError(f'--num_shards must be at least 1, got {num_shards}')
  folder = os.path.dirname(os.path.abspath(output))
  os.makedirs(folder, exist_ok=True)
  paths = shard_paths(output, num_shards)
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  images = objects = 0
  per_class = np.zeros(source.num_classes, np.int64)
  try:
    for record, key, path in _records_with_keys(source):
      example = make_example(record, key, source.class_names, source.category_ids, path)
      writers[images % num_shards].write(example.SerializeToString())
      images += 1
      objects += len(record[R.CLASSES])
      per_class += np.bincount(record[R.CLASSES] - 1,
                               minlength=len(per_class))[:len(per_class)]
  finally:
    for w in writers:
      w.close()
  label_map_path = os.path.join(folder, 'label_map.pbtxt')
  with open(label_map_path, 'w', encoding='utf-8') as f:
    f.write(label_map_lib.format_label_map(source.class_names, source.category_ids))
  summary = {
      'dataset': source.name,
      'split': source.split,
      'class_names': list(source.class_names),
      'category_ids': [int(c) for c in source.category_ids],
      'candidate_images': int(source.num_images),
      'images': images,
      'skipped_images': int(source.num_images) - images,
      'objects': objects,
      'per_class': {n: int(c) for n, c in zip(source.class_names, per_class)},
      'shards': paths,
      'label_map': label_map_path,
      'problems': source.problems.summary(),
  }
  with open(f'{output}-summary.json', 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=1)
  return summary


def define_flags():
  flags.DEFINE_string('dataset', None, registry.SPEC_HELP)
  flags.DEFINE_string('split', 'train', 'Split to convert.')
  flags.DEFINE_string('output', None, 'Prefix of the written files (PREFIX-00000-of-N...).')
  flags.DEFINE_integer('num_shards', 1, 'Number of TFRecord files.')
  flags.DEFINE_list('classes', None, 'Class names to keep (default: all).')
  flags.DEFINE_string('data_dir', None, 'TFDS data_dir (tfds: datasets).')
  flags.DEFINE_float('val_fraction', 0.1, "Share of 'val' in data without split files.")
  flags.DEFINE_string('label_map', None, 'label_map.pbtxt of a tfrecord: dataset.')


def main(argv):
  if len(argv) > 1:
    sys.stderr.write(f'convert: unexpected arguments {argv[1:]}\n')
    return 2
  f = flags.FLAGS
  try:
    if not f.dataset or not f.output:
      raise ValueError('--dataset and --output are required')
    source = registry.get_source(f.dataset, f.split, classes=f.classes, data_dir=f.data_dir,
                                 val_fraction=f.val_fraction, label_map=f.label_map)
    summary = convert(source, f.output, f.num_shards)
  except (ValueError, KeyError, FileNotFoundError) as e:  # a bad spec, folder or file
    sys.stderr.write(f'convert: error: --dataset={f.dataset} --split={f.split}: {e}\n')
    return 2
  sys.stdout.write(json.dumps(summary) + '\n')
  sys.stdout.flush()
  return 0


if __name__ == '__main__':
  define_flags()
  cli.run_main(main, 'convert')
