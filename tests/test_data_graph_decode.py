"""Folder sources decoding in TF ops: the same records as the Python (Pillow) path, bit for
bit, on real photos (raccoon: many sizes, grayscale JPEGs); images TensorFlow would decode
differently keep the Python path."""

import os
import shutil

import numpy as np
from PIL import Image

from faster_rcnn_tf.data import graph_decode
from faster_rcnn_tf.data import pipeline
from faster_rcnn_tf.data import service
from faster_rcnn_tf.data import voc
from tests.test_data_voc import _shared


def _assert_same(a_records, b_records):
  assert len(a_records) == len(b_records)
  for a, b in zip(a_records, b_records):
    assert int(a['image_id']) == int(b['image_id'])
    for key in ('image', 'boxes', 'classes', 'difficult', 'original_size'):
      np.testing.assert_array_equal(a[key], b[key], err_msg=f'{key} {a["image_id"]}')


def test_raccoon_graph_path_equals_python_path_and_has_no_callback():
  source = voc.VocSource(_shared('raccoon'), 'all')
  assert source.reports_in_graph
  graph = list(source.as_dataset().as_numpy_iterator())
  _assert_same(list(source.records()), graph)
  assert {'raccoon-150', 'raccoon-152', 'raccoon-161'} <= {
      source.split_ids[int(r['image_id'])] for r in graph}  # the grayscale ones
  ds = pipeline.make_dataset(source, training=True, batch_size=2)
  assert not service.python_ops(ds)
  # Shuffled: the permutation of the Python path for the same seed.
  python = voc.VocSource(_shared('raccoon'), 'test')
  python.decode_in_graph = False
  assert not python.reports_in_graph and service.python_ops(python.as_dataset())
  graph = voc.VocSource(_shared('raccoon'), 'test')
  order = [int(r['image_id']) for r in graph.as_dataset(shuffle_seed=5).as_numpy_iterator()]
  assert order == [int(r['image_id'])
                   for r in python.as_dataset(shuffle_seed=5).as_numpy_iterator()]
  assert order != sorted(order)


def test_images_tensorflow_would_decode_differently_keep_the_python_path(tmp_path):
  bccd = _shared('bccd')
  for sub in ('Annotations', 'JPEGImages'):
    (tmp_path / sub).mkdir()
  stems = ['BloodImage_00001', 'BloodImage_00010']
  for stem in stems:
    shutil.copy(os.path.join(bccd, 'Annotations', stem + '.xml'), tmp_path / 'Annotations')
    shutil.copy(os.path.join(bccd, 'JPEGImages', stem + '.jpg'), tmp_path / 'JPEGImages')
  plain = voc.VocSource(str(tmp_path), 'all')
  assert plain.reports_in_graph
  # A CMYK JPEG: Pillow converts it; the split goes back to Python decoding.
  rgb = Image.open(tmp_path / 'JPEGImages' / f'{stems[1]}.jpg')
  rgb.convert('CMYK').save(tmp_path / 'JPEGImages' / f'{stems[1]}.jpg', format='JPEG')
  assert not graph_decode.plain_image(str(tmp_path / 'JPEGImages' / f'{stems[1]}.jpg'))
  source = voc.VocSource(str(tmp_path), 'all')
  assert not source.reports_in_graph
  _assert_same(list(source.records()), list(source.as_dataset().as_numpy_iterator()))
  assert 'cmyk_image' in source.problems
  # A 16-bit PNG is not plain either; an 8-bit one is.
  gray16 = Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
  gray16.save(tmp_path / 'g16.png')
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'rgb8.png')
  assert not graph_decode.plain_image(str(tmp_path / 'g16.png'))
  assert graph_decode.plain_image(str(tmp_path / 'rgb8.png'))
