"""Record construction and the generic box checks."""

import numpy as np
import pytest

from faster_rcnn_tf.data import records
from faster_rcnn_tf.data.problems import Problems


def test_make_record_dtypes_and_shapes():
  r = records.make_record(np.zeros((4, 6, 3), np.uint8), [], [], None, 9)
  assert r['boxes'].shape == (0, 4) and r['boxes'].dtype == np.float32
  assert r['classes'].dtype == np.int32 and r['difficult'].dtype == bool
  assert r['image_id'].dtype == np.int64 and r['image_id'] == 9
  np.testing.assert_array_equal(r['original_size'], [4, 6])
  assert set(r) == set(records.RECORD_SIGNATURE)
  with pytest.raises(ValueError):
    records.make_record(np.zeros((4, 6), np.uint8), [], [])
  with pytest.raises(ValueError):
    records.make_record(np.zeros((4, 6, 3), np.uint8), [[0, 0, 1, 1]], [1, 2])


def test_clean_boxes():
  p = Problems()
  boxes = [
      [1, 2, 5, 6],          # fine
      [0, 0, 10, 20],        # exactly the image: fine
      [3, 3, 3, 8],          # zero height
      [5, 2, 1, 6],          # inverted
      [-2, 15, 4, 25],       # partly outside -> clipped
      [11, 0, 15, 5],        # entirely below
      [np.nan, 0, 1, 1],     # not finite
  ]
  clean, keep = records.clean_boxes(boxes, 10, 20, p, 'x.xml')
  np.testing.assert_array_equal(keep, [True, True, False, False, True, False, False])
  np.testing.assert_array_equal(clean, [[1, 2, 5, 6], [0, 0, 10, 20], [0, 15, 4, 20]])
  assert clean.dtype == np.float32
  assert {k: v['count'] for k, v in p.summary().items()} == {
      'zero_area_box': 1, 'inverted_box': 1, 'box_clipped': 1, 'box_outside_image': 1,
      'invalid_box': 1}
  clean, keep = records.clean_boxes(np.zeros((0, 4)), 10, 20, p, 'x.xml')
  assert clean.shape == (0, 4) and keep.shape == (0,)
