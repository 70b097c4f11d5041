"""Spec strings -> sources."""

import os

import pytest

from faster_rcnn_tf.data import registry
from faster_rcnn_tf.data.coco import CocoSource
from faster_rcnn_tf.data.shapes import ShapesSource
from faster_rcnn_tf.data.voc import VocSource
from tests.test_data_voc import _good_files, _write


def test_shapes_specs():
  s = registry.get_source('shapes', 'test', seed=2)
  assert isinstance(s, ShapesSource) and s.num_images == 200 and s.seed == 2
  s = registry.get_source('shapes:image_size=96,train_images=30', 'train',
                          shapes_options={'image_size': 64, 'test_images': 5})
  assert s.image_size == 96 and s.num_images == 30   # the spec string wins
  s = registry.get_source('shapes', 'test', shapes_options={'image_size': 64, 'test_images': 5})
  assert s.image_size == 64 and s.num_images == 5
  s = registry.get_source('shapes', 'train', classes='square, circle')
  assert s.class_names == ['square', 'circle']
  with pytest.raises(ValueError, match='key=value'):
    registry.get_source('shapes:oops')


def test_voc_and_coco_specs(tmp_path):
  _write(str(tmp_path), _good_files(), ['good'])
  s = registry.get_source(f'voc:{tmp_path}', 'train')
  assert isinstance(s, VocSource) and s.num_images == 1 and s.name == f'voc:{tmp_path}'
  json_path = os.path.join(tmp_path, 'ann.json')
  with open(json_path, 'w') as f:
    f.write('{"images": [], "annotations": [], "categories": [{"id": 4, "name": "a"}]}')
  s = registry.get_source(f'coco:{json_path}')
  assert isinstance(s, CocoSource) and s.images_dir == os.path.join(str(tmp_path), 'images')
  s = registry.get_source(f'coco:{json_path}:{tmp_path}/pics')
  assert s.images_dir == os.path.join(str(tmp_path), 'pics') and s.category_ids == [4]


@pytest.mark.parametrize('spec', ['imagenet:x', 'voc', 'coco:', 'tfds'])
def test_bad_specs(spec):
  with pytest.raises(ValueError):
    registry.get_source(spec)
