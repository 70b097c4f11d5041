"""TFRecords in the Object Detection API schema: convert -> tfrecord: round trip on real data,
the written schema key by key, a pipeline graph without Python, label maps, hashed splits,
file sharding."""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from faster_rcnn_tf.data import convert
from faster_rcnn_tf.data import inspect as inspect_lib
from faster_rcnn_tf.data import label_map
from faster_rcnn_tf.data import pipeline
from faster_rcnn_tf.data import registry
from faster_rcnn_tf.data import tfrecord
from faster_rcnn_tf.data import voc
from tests import run_helpers
from tests.test_data_voc import _shared

# The Object Detection API's documented tf.train.Example keys (its "Preparing inputs" page
# and its TfExampleDecoder), with the list type each holds and whether it has one value
# ('scalar') or one per object ('object').
OD_API_KEYS = {
    'image/encoded': ('bytes_list', 'scalar'),
    'image/format': ('bytes_list', 'scalar'),
    'image/height': ('int64_list', 'scalar'),
    'image/width': ('int64_list', 'scalar'),
    'image/filename': ('bytes_list', 'scalar'),
    'image/source_id': ('bytes_list', 'scalar'),
    'image/key/sha256': ('bytes_list', 'scalar'),
    'image/object/bbox/xmin': ('float_list', 'object'),
    'image/object/bbox/ymin': ('float_list', 'object'),
    'image/object/bbox/xmax': ('float_list', 'object'),
    'image/object/bbox/ymax': ('float_list', 'object'),
    'image/object/class/label': ('int64_list', 'object'),
    'image/object/class/text': ('bytes_list', 'object'),
    'image/object/difficult': ('int64_list', 'object'),
    'image/object/is_crowd': ('int64_list', 'object'),
}
# How the Object Detection API's decoder parses them (tf.io feature specs).
OD_API_PARSER = {
    'image/encoded': tf.io.FixedLenFeature((), tf.string, default_value=''),
    'image/format': tf.io.FixedLenFeature((), tf.string, default_value='jpeg'),
    'image/filename': tf.io.FixedLenFeature((), tf.string, default_value=''),
    'image/key/sha256': tf.io.FixedLenFeature((), tf.string, default_value=''),
    'image/source_id': tf.io.FixedLenFeature((), tf.string, default_value=''),
    'image/height': tf.io.FixedLenFeature((), tf.int64, default_value=1),
    'image/width': tf.io.FixedLenFeature((), tf.int64, default_value=1),
    'image/object/bbox/xmin': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/xmax': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/ymin': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/ymax': tf.io.VarLenFeature(tf.float32),
    'image/object/class/label': tf.io.VarLenFeature(tf.int64),
    'image/object/class/text': tf.io.VarLenFeature(tf.string),
    'image/object/difficult': tf.io.VarLenFeature(tf.int64),
    'image/object/is_crowd': tf.io.VarLenFeature(tf.int64),
}


def _run_convert(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)
  return subprocess.run([sys.executable, '-m', 'faster_rcnn_tf.data.convert', *args],
                        cwd=run_helpers.ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


@pytest.fixture(scope='module')
def bccd_converted(tmp_path_factory):
  """bccd's train split converted by the command, 3 shards: (output prefix, summary)."""
  out = tmp_path_factory.mktemp('bccd_tf') / 'bccd_train'
  result = _run_convert(f'--dataset=voc:{_shared("bccd")}', '--split=train',
                        f'--output={out}', '--num_shards=3')
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  return out, summary


def test_round_trip_on_bccd_train_is_identical(bccd_converted):
  out, summary = bccd_converted
  folder = os.path.dirname(str(out))
  shards = sorted(glob.glob(f'{out}-*.tfrecord'))
  assert shards == [f'{out}-0000{i}-of-00003.tfrecord' for i in range(3)]
  assert summary['shards'] == shards and summary['images'] == 205
  with open(f'{out}-summary.json') as f:
    assert json.load(f) == summary

  original = voc.VocSource(_shared('bccd'), 'train')
  by_id = {int(r['image_id']): r for r in original.records()}
  back = registry.get_source(f'tfrecord:{out}-*.tfrecord', 'all',
                             label_map=os.path.join(folder, 'label_map.pbtxt'))
  assert back.class_names == original.class_names and back.num_images == 205
  assert back.category_ids == [1, 2, 3]
  python_records = list(back.records())
  graph_records = list(back.as_dataset().as_numpy_iterator())
  assert len(python_records) == len(graph_records) == 205
  assert sorted(int(r['image_id']) for r in python_records) == sorted(by_id)
  for py, gr in zip(python_records, graph_records):
    ref = by_id[int(py['image_id'])]
    assert int(gr['image_id']) == int(py['image_id'])
    for got in (py, gr):
      np.testing.assert_array_equal(got['image'], ref['image'])
      np.testing.assert_allclose(got['boxes'], ref['boxes'], atol=1e-4, rtol=0)
      np.testing.assert_array_equal(got['classes'], ref['classes'])
      np.testing.assert_array_equal(got['difficult'], ref['difficult'])
      np.testing.assert_array_equal(got['original_size'], ref['image'].shape[:2])

  # The problems met while converting are inspect's for the split.
  inspected = inspect_lib.run(f'voc:{_shared("bccd")}', 'train', output_dir='')
  assert summary['problems'] == inspected['problems']
  assert summary['problems']['zero_area_box']['count'] == 1
  assert summary['objects'] == inspected['objects']
  assert summary['per_class'] == inspected['per_class']

  # Without the label map the names come from class/text: the same classes here.
  texts = registry.get_source(f'tfrecord:{out}-*.tfrecord', 'all')
  assert texts.class_names == original.class_names


def test_written_schema_key_by_key(bccd_converted):
  out, _ = bccd_converted
  original = voc.VocSource(_shared('bccd'), 'train')
  first = next(iter(tf.data.TFRecordDataset(f'{out}-00000-of-00003.tfrecord')))
  example = tf.train.Example.FromString(first.numpy())
  features = example.features.feature
  assert set(features) == set(OD_API_KEYS)
  record = original.load(0)  # record 0 goes to shard 0, first
  n = len(record['classes'])
  for key, (kind, per) in OD_API_KEYS.items():
    assert features[key].WhichOneof('kind') == kind, key
    values = getattr(features[key], kind).value
    assert len(values) == (1 if per == 'scalar' else n), key
  assert features['image/format'].bytes_list.value[0] == b'jpeg'
  assert features['image/filename'].bytes_list.value[0] == f'{original.split_ids[0]}.jpg'.encode()
  assert features['image/source_id'].bytes_list.value[0] == b'0'
  with open(original.image_file(0), 'rb') as f:
    assert features['image/encoded'].bytes_list.value[0] == f.read()  # original bytes
  # Parsed as the Object Detection API's decoder parses it.
  parsed = tf.io.parse_single_example(first, OD_API_PARSER)
  h, w = record['image'].shape[:2]
  assert int(parsed['image/height']) == h and int(parsed['image/width']) == w
  ymin, xmin, ymax, xmax = (tf.sparse.to_dense(parsed[f'image/object/bbox/{k}']).numpy()
                            for k in ('ymin', 'xmin', 'ymax', 'xmax'))
  assert np.all((0 <= xmin) & (xmin < xmax) & (xmax <= 1))
  np.testing.assert_allclose(np.stack([ymin * h, xmin * w, ymax * h, xmax * w], -1),
                             record['boxes'], atol=1e-4)
  labels = tf.sparse.to_dense(parsed['image/object/class/label']).numpy()
  np.testing.assert_array_equal(labels, record['classes'])
  texts = tf.sparse.to_dense(parsed['image/object/class/text']).numpy()
  assert [t.decode() for t in texts] == [original.class_names[c - 1]
                                         for c in record['classes']]
  with open(os.path.join(os.path.dirname(str(out)), 'label_map.pbtxt')) as f:
    text = f.read()
  assert text.startswith("item {\n  id: 1\n  name: 'Platelets'\n")


_PY_OPS = {'PyFunc', 'PyFuncStateless', 'EagerPyFunc', 'NumpyFunction'}


def _op_types(dataset):
  graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())  # pylint: disable=protected-access
  ops = {node.op for node in graph.node}
  for function in graph.library.function:
    ops.update(node.op for node in function.node_def)
  return ops


def test_tfrecord_training_pipeline_graph_has_no_python(bccd_converted):
  out, _ = bccd_converted
  source = registry.get_source(f'tfrecord:{out}-*.tfrecord', 'train')
  ds = pipeline.make_dataset(source, training=True, batch_size=2, min_size=600,
                             max_size=1000, max_boxes=5)
  ops = _op_types(ds)
  # The graph is the whole pipeline: reading, parsing, decoding, flipping, resizing.
  assert {'TFRecordDataset', 'ParseExampleV2', 'DecodeJpeg', 'DecodeImage', 'ReverseV2',
          'ResizeBilinear', 'PaddedBatchDatasetV2'} <= ops
  assert not ops & _PY_OPS, ops & _PY_OPS
  batch = next(iter(ds))  # and it runs, truncation reported in graph ops
  assert batch['images'].shape[0] == 2 and batch['gt_classes'].shape[1] == 5
  # The check finds a callback where there is one: a folder decoding in Python.
  python_source = voc.VocSource(_shared('bccd'), 'train')
  python_source.decode_in_graph = False
  folder = pipeline.make_dataset(python_source, training=True, batch_size=2)
  assert _op_types(folder) & _PY_OPS


def test_tfrecord_hashed_split_equals_the_folders(tmp_path):
  bccd = _shared('bccd')
  stems = sorted(os.listdir(os.path.join(bccd, 'Annotations')))[:12]
  for sub in ('Annotations', 'JPEGImages'):
    (tmp_path / 'voc' / sub).mkdir(parents=True)
  for name in stems:
    stem = name[:-4]
    shutil.copy(os.path.join(bccd, 'Annotations', name), tmp_path / 'voc' / 'Annotations')
    shutil.copy(os.path.join(bccd, 'JPEGImages', stem + '.jpg'), tmp_path / 'voc' / 'JPEGImages')
  source = registry.get_source(f'voc:{tmp_path / "voc"}', 'all')
  convert.convert(source, str(tmp_path / 'tf' / 'all'), num_shards=2)
  for split in ('train', 'val'):
    folder = registry.get_source(f'voc:{tmp_path / "voc"}', split, val_fraction=0.4)
    records = registry.get_source(f'tfrecord:{tmp_path}/tf/all-*.tfrecord', split,
                                  val_fraction=0.4)
    want = sorted(int(r['image_id']) for r in folder.records())
    assert sorted(int(r['image_id']) for r in records.records()) == want
    assert sorted(int(r['image_id']) for r in records.as_dataset().as_numpy_iterator()) == want
    assert records.num_images == len(want)


def test_problems_survive_conversion(tmp_path):
  """A folder with a grayscale PNG posing as .jpg, an unreadable image and a box outside:
  convert reports inspect's problems and reads back the cleaned records."""
  bccd = _shared('bccd')
  for sub in ('Annotations', 'JPEGImages'):
    (tmp_path / 'voc' / sub).mkdir(parents=True)
  stems = ['BloodImage_00001', 'BloodImage_00010', 'BloodImage_00100']
  for stem in stems:
    shutil.copy(os.path.join(bccd, 'Annotations', stem + '.xml'), tmp_path / 'voc' / 'Annotations')
  shutil.copy(os.path.join(bccd, 'JPEGImages', stems[0] + '.jpg'), tmp_path / 'voc' / 'JPEGImages')
  gray = Image.open(os.path.join(bccd, 'JPEGImages', stems[1] + '.jpg')).convert('L')
  gray.save(tmp_path / 'voc' / 'JPEGImages' / f'{stems[1]}.jpg', format='PNG')
  (tmp_path / 'voc' / 'JPEGImages' / f'{stems[2]}.jpg').write_bytes(b'\xff\xd8\xffbroken')
  xml = tmp_path / 'voc' / 'Annotations' / f'{stems[0]}.xml'
  xml.write_text(xml.read_text().replace('</annotation>', (
      '<object><name>RBC</name><bndbox><xmin>600</xmin><ymin>400</ymin><xmax>700</xmax>'
      '<ymax>500</ymax></bndbox></object></annotation>')))
  spec = f'voc:{tmp_path / "voc"}'
  summary = convert.convert(registry.get_source(spec, 'all'), str(tmp_path / 'tf' / 'x'))
  inspected = inspect_lib.run(spec, 'all', output_dir='')
  assert summary['problems'] == inspected['problems']
  assert set(summary['problems']) >= {'grayscale_image', 'wrong_extension', 'box_clipped',
                                      'unreadable_image'}
  assert summary['images'] == 2 and summary['skipped_images'] == 1
  back = registry.get_source(f'tfrecord:{tmp_path}/tf/x-*.tfrecord', 'all',
                             label_map=str(tmp_path / 'tf' / 'label_map.pbtxt'))
  originals = list(registry.get_source(spec, 'all').records())
  got = list(back.as_dataset().as_numpy_iterator())
  assert len(got) == 2
  for a, b in zip(got, originals):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_allclose(a['boxes'], b['boxes'], atol=1e-4)
    np.testing.assert_array_equal(a['classes'], b['classes'])
  assert back.problems.summary() == {}  # the cleaning happened before writing


def _example(boxes, labels, texts, crowd=None, encoded=None, source_id=b'img'):
  image = np.zeros((20, 40, 3), np.uint8)
  feature = {
      'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[encoded if encoded is not None else tf.io.encode_png(image).numpy()])),
      'image/source_id': tf.train.Feature(bytes_list=tf.train.BytesList(value=[source_id])),
      'image/object/class/label': tf.train.Feature(int64_list=tf.train.Int64List(
          value=labels)),
      'image/object/class/text': tf.train.Feature(bytes_list=tf.train.BytesList(
          value=texts)),
  }
  for k, key in enumerate(('ymin', 'xmin', 'ymax', 'xmax')):
    feature[f'image/object/bbox/{key}'] = tf.train.Feature(
        float_list=tf.train.FloatList(value=[b[k] for b in boxes]))
  if crowd is not None:
    feature['image/object/is_crowd'] = tf.train.Feature(
        int64_list=tf.train.Int64List(value=crowd))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_foreign_records_labels_crowd_and_cleaning(tmp_path):
  """Records as another tool writes them: non-contiguous label ids, a crowd box, a box
  partly outside, an unknown label, a non-numeric source_id, an undecodable image."""
  path = str(tmp_path / 'foreign.tfrecord')
  with tf.io.TFRecordWriter(path) as w:
    w.write(_example([(0.1, 0.1, 0.5, 0.5), (0.2, 0.2, 0.6, 0.6), (0.5, 0.5, 1.5, 0.9),
                      (0.1, 0.1, 0.2, 0.2)],
                     [7, 3, 7, 9], [b'dog', b'cat', b'dog', b'fish'], crowd=[0, 1, 0, 0]))
    w.write(_example([], [], [], encoded=b'not an image', source_id=b'42'))
  (tmp_path / 'map.pbtxt').write_text(
      "# pets\nitem {\n  name: \"cat\"\n  id: 3\n  display_name: 'Cat'\n}\n"
      "item { id: 7 name: 'dog' keypoints { id: 0 label: 'nose' } }\n")
  source = registry.get_source(f'tfrecord:{path}', 'all', label_map=str(tmp_path / 'map.pbtxt'))
  assert source.class_names == ['cat', 'dog'] and source.category_ids == [3, 7]
  expected_boxes = [[2, 4, 10, 20], [10, 20, 20, 36]]  # y * 20, x * 40; the third clipped
  py = list(source.records())
  tf_records = list(source.as_dataset().as_numpy_iterator())
  assert len(py) == len(tf_records) == 1
  for r in (py[0], tf_records[0]):
    np.testing.assert_allclose(r['boxes'], expected_boxes, atol=1e-5)
    np.testing.assert_array_equal(r['classes'], [2, 2])
    assert int(r['image_id']) == int(tf.strings.to_hash_bucket_fast('img', 2 ** 62))
  problems = source.problems.summary()
  assert {k: v['count'] for k, v in problems.items()} == {
      'crowd_box': 1, 'unknown_class': 1, 'box_clipped': 1, 'unreadable_image': 1,
      'missing_size': 1}


def test_label_map_text_round_trip_and_errors():
  text = label_map.format_label_map(["it's", 'b"c'], [2, 5])
  assert label_map.parse_label_map(text) == [
      {'id': 2, 'name': "it's", 'display_name': "it's"},
      {'id': 5, 'name': 'b"c', 'display_name': 'b"c'}]
  for bad, message in (("item { id: 0 name: 'a' }", 'background'),
                       ("item { id: 1 }", 'both'),
                       ("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", 'twice'),
                       ("item { id: 1 name: 'a' ", 'not closed')):
    with pytest.raises(ValueError, match=message):
      label_map.parse_label_map(bad, 'x.pbtxt')


def test_auto_sharding_gives_two_workers_disjoint_files(tmp_path):
  """tf.data's multi-worker rewrite (what MultiWorkerMirroredStrategy applies) on the
  tfrecord pipeline: each of two workers reads its own files."""
  from tensorflow.python.data.experimental.ops import distribute as data_distribute  # pylint: disable=g-import-not-at-top
  images = [np.full((8, 8, 3), i, np.uint8) for i in range(6)]
  records = [{'image': im, 'boxes': np.zeros((0, 4), np.float32),
              'classes': np.zeros(0, np.int32), 'image_id': i} for i, im in enumerate(images)]
  from faster_rcnn_tf.data.source import InMemorySource  # pylint: disable=g-import-not-at-top
  convert.convert(InMemorySource(records, ['a']), str(tmp_path / 's'), num_shards=4)
  source = registry.get_source(f'tfrecord:{tmp_path}/s-*.tfrecord', 'all', classes=['a'])
  seen = []
  for index in range(2):
    ds = data_distribute._AutoShardDataset(source.as_dataset(), 2, index)  # pylint: disable=protected-access
    seen.append(sorted(int(r['image_id']) for r in ds.as_numpy_iterator()))
  # Shard k holds images k, k + 4: worker 0 gets files 0 and 2, worker 1 files 1 and 3.
  assert seen == [[0, 2, 4], [1, 3, 5]]


_WORKER = '''
import json, sys
import tensorflow as tf
from faster_rcnn_tf.data import pipeline, registry
strategy = tf.distribute.MultiWorkerMirroredStrategy()
source = registry.get_source(sys.argv[1], 'all', classes=['a'])
dataset = pipeline.make_dataset(source, training=False, batch_size=2, min_size=8, max_size=8,
                                max_boxes=1)
ids = []
for batch in strategy.experimental_distribute_dataset(dataset):
  for part in strategy.experimental_local_results(batch['image_ids']):
    ids += [int(v) for v in part.numpy()]
print('IDS', json.dumps(ids), flush=True)
'''


def test_two_multi_worker_workers_read_disjoint_files(tmp_path):
  """Two MultiWorkerMirroredStrategy workers on 127.0.0.1 (as train.py --strategy=multi_worker
  runs them) each see their own shards' images; together the whole split."""
  from faster_rcnn_tf.data.source import InMemorySource  # pylint: disable=g-import-not-at-top
  records = [{'image': np.full((8, 8, 3), i, np.uint8), 'boxes': np.zeros((0, 4)),
              'classes': np.zeros(0, np.int32), 'image_id': i} for i in range(10)]
  convert.convert(InMemorySource(records, ['a']), str(tmp_path / 's'), num_shards=4)
  spec = f'tfrecord:{tmp_path}/s-*.tfrecord'
  ports = []
  import socket  # pylint: disable=g-import-not-at-top
  for _ in range(2):
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      ports.append(s.getsockname()[1])
  workers = []
  for index in range(2):
    tf_config = {'cluster': {'worker': [f'127.0.0.1:{p}' for p in ports]},
                 'task': {'type': 'worker', 'index': index}}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT,
               TF_CONFIG=json.dumps(tf_config))
    workers.append(subprocess.Popen([sys.executable, '-c', _WORKER, spec], cwd=run_helpers.ROOT,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True))
  seen = []
  for w in workers:
    out, err = w.communicate(timeout=300)
    assert w.returncode == 0, err[-3000:]
    (line,) = [l for l in out.splitlines() if l.startswith('IDS ')]
    seen.append(sorted(json.loads(line[4:])))
  # Shard k holds images k, k + 4, k + 8; worker 0 reads shards 0 and 2, worker 1 1 and 3.
  assert seen == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]


def test_files_that_are_not_records_are_one_clear_error(tmp_path):
  (tmp_path / 'junk.tfrecord').write_bytes(b'this is not a TFRecord file at all')
  with pytest.raises(ValueError, match='cannot read the records'):
    registry.get_source(f'tfrecord:{tmp_path}/*.tfrecord', 'all')
  with pytest.raises(FileNotFoundError, match='no TFRecord file matches'):
    registry.get_source(f'tfrecord:{tmp_path}/none-*.tfrecord', 'all')
