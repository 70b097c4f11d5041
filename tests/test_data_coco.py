"""COCO source on a small COCO json written here."""

import json
import logging
import os

import numpy as np
from PIL import Image

from faster_rcnn_tf.data import coco
from faster_rcnn_tf.data import registry


def _write_dataset(root, images_dir='images'):
  os.makedirs(os.path.join(root, images_dir))
  for name, (h, w) in {'a.jpg': (40, 60), 'b.png': (30, 30), 'c.jpg': (50, 50)}.items():
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(os.path.join(root, images_dir, name))
  data = {
      'images': [
          {'id': 42, 'file_name': 'a.jpg', 'width': 60, 'height': 40},
          {'id': 7, 'file_name': 'b.png', 'width': 30, 'height': 30},   # no annotations
          {'id': 100, 'file_name': 'c.jpg', 'width': 50, 'height': 50},
      ],
      # non-contiguous ids, listed out of order
      'categories': [{'id': 90, 'name': 'toothbrush'}, {'id': 1, 'name': 'person'},
                     {'id': 3, 'name': 'car'}],
      'annotations': [
          {'id': 1, 'image_id': 42, 'category_id': 3, 'bbox': [5, 10, 20, 15], 'iscrowd': 0},
          {'id': 2, 'image_id': 42, 'category_id': 1, 'bbox': [0, 0, 60, 40], 'iscrowd': 1},
          {'id': 3, 'image_id': 42, 'category_id': 90, 'bbox': [50.5, 30, 20, 5], 'iscrowd': 0},
          {'id': 4, 'image_id': 100, 'category_id': 1, 'bbox': [1, 2, 0, 9], 'iscrowd': 0},
          {'id': 5, 'image_id': 100, 'category_id': 1, 'bbox': [1, 2, 3, 4], 'iscrowd': 0},
          {'id': 6, 'image_id': 999, 'category_id': 1, 'bbox': [1, 2, 3, 4], 'iscrowd': 0},
      ],
  }
  path = os.path.join(root, 'instances.json')
  with open(path, 'w') as f:
    json.dump(data, f)
  return path


def test_coco_source(tmp_path, caplog):
  path = _write_dataset(str(tmp_path))
  with caplog.at_level(logging.WARNING):
    source = coco.CocoSource(path)  # images dir defaults to <json folder>/images
    records = list(source.records())
  assert source.class_names == ['person', 'car', 'toothbrush']
  assert source.category_ids == [1, 3, 90]
  assert source.class_id_of_category == {1: 1, 3: 2, 90: 3}
  assert [r['image_id'] for r in records] == [42, 7, 100]
  a, b, c = records
  # [x, y, w, h] = [5, 10, 20, 15] -> [10, 5, 25, 25]; [50.5, 30, 20, 5] clipped at x = 60
  np.testing.assert_allclose(a['boxes'], [[10, 5, 25, 25], [30, 50.5, 35, 60]])
  np.testing.assert_array_equal(a['classes'], [2, 3])
  assert not a['difficult'].any()
  assert b['boxes'].shape == (0, 4) and b['image'].shape == (30, 30, 3)
  np.testing.assert_array_equal(c['boxes'], [[2, 1, 6, 4]])
  np.testing.assert_array_equal(c['classes'], [1])
  summary = source.problems.summary()
  assert summary['crowd_box'] == {'count': 1, 'examples': ['a.jpg']}
  assert summary['no_objects'] == {'count': 1, 'examples': ['b.png']}
  assert summary['zero_area_box'] == {'count': 1, 'examples': ['c.jpg']}
  assert summary['box_clipped'] == {'count': 1, 'examples': ['a.jpg']}
  assert summary['orphan_annotation']['count'] == 1
  assert any('crowd_box' in m and 'a.jpg' in m for m in caplog.messages)


def test_coco_spec_with_images_dir_and_class_subset(tmp_path):
  path = _write_dataset(str(tmp_path), images_dir='val2017')
  source = registry.get_source(f'coco:{path}:{tmp_path}/val2017', 'val', classes=['car'])
  assert source.class_names == ['car'] and source.category_ids == [3]
  records = list(source.records())
  np.testing.assert_array_equal(records[0]['classes'], [1])
  np.testing.assert_array_equal(records[0]['boxes'], [[10, 5, 25, 25]])
  assert source.problems.count('unknown_class') == 4  # person x3 (one crowd) + toothbrush


def test_missing_image_is_skipped(tmp_path):
  path = _write_dataset(str(tmp_path))
  os.remove(os.path.join(tmp_path, 'images', 'b.png'))
  source = coco.CocoSource(path)
  assert [r['image_id'] for r in source.records()] == [42, 100]
  assert source.problems.summary()['missing_image']['examples'] == ['b.png']
