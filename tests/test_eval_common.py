"""Evaluation helpers: detection normalization and ground truth from records / batches."""

import numpy as np
import pytest

from faster_rcnn_tf import inputs
from faster_rcnn_tf.evaluation import common


def test_as_detections_accepts_tuples_and_arrays():
  rows = [(3, 1, 0.5, [0, 0, 1, 1]), (4, 2, 0.25, np.array([1, 2, 3, 4], np.float32))]
  a = common.as_detections(rows)
  b = common.as_detections({'image_ids': np.array([3, 4]), 'classes': [1, 2],
                            'scores': [0.5, 0.25], 'boxes': [[0, 0, 1, 1], [1, 2, 3, 4]]})
  again = common.as_detections(a)
  for field in ('image_ids', 'classes', 'scores', 'boxes'):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(getattr(a, field), getattr(again, field))
  assert len(a) == 2 and a.image_ids.dtype == np.int64 and a.boxes.dtype == np.float64
  s = common.as_detections([('000005', 1, 0.5, [0, 0, 1, 1])])
  assert s.image_ids.dtype == object and s.image_ids.tolist() == ['000005']
  both = common.concat_detections([a, s, []])
  assert both.image_ids.tolist() == [3, 4, '000005'] and both.boxes.shape == (3, 4)
  assert len(common.as_detections([])) == 0


def test_as_detections_errors():
  with pytest.raises(ValueError, match='inconsistent lengths'):
    common.as_detections({'image_ids': [1], 'classes': [1, 1], 'scores': [1.0],
                          'boxes': [[0, 0, 1, 1]]})
  with pytest.raises(ValueError, match=r"lacks keys \['scores'\]"):
    common.as_detections({'image_ids': [1], 'classes': [1], 'boxes': [[0, 0, 1, 1]]})
  with pytest.raises(ValueError, match='detection 0: box has a non-finite coordinate'):
    common.as_detections([(1, 1, 0.5, [0, np.inf, 1, 1])])
  with pytest.raises(ValueError, match='classes must be integers'):
    common.as_detections([(1, 1.5, 0.5, [0, 0, 1, 1])])


def test_ground_truth_from_records_and_batch():
  records = [
      {'image_id': np.int64(7), 'boxes': np.array([[0, 0, 10, 20]], np.float32),
       'classes': np.array([2], np.int32), 'difficult': np.array([True])},
      {'image_id': np.int64(8), 'boxes': np.zeros((0, 4), np.float32),
       'classes': np.zeros(0, np.int32), 'difficult': np.zeros(0, bool)},
  ]
  gt = common.ground_truth_from_records(records)
  assert list(gt) == [7, 8]
  np.testing.assert_array_equal(gt[7]['boxes'], [[0, 0, 10, 20]])
  assert gt[7]['difficult'].tolist() == [True] and gt[8]['boxes'].shape == (0, 4)
  with pytest.raises(ValueError, match='appears twice'):
    common.ground_truth_from_records(records + records[:1])

  batch = {
      inputs.GT_BOXES: np.array([[[0, 0, 20, 40], [0, 0, 0, 0]],
                                 [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32),
      inputs.GT_CLASSES: np.array([[2, 0], [0, 0]], np.int32),
      inputs.GT_DIFFICULT: np.array([[True, False], [False, False]]),
      inputs.SCALES: np.array([2.0, 1.5], np.float32),
      inputs.IMAGE_IDS: np.array([7, 8], np.int64),
  }
  from_batch = common.ground_truth_from_batch(batch)
  assert list(from_batch) == [7, 8]
  for key in (7, 8):
    for field in ('boxes', 'classes', 'difficult'):
      np.testing.assert_array_equal(from_batch[key][field], gt[key][field])
  with pytest.raises(ValueError, match='appears twice'):
    common.ground_truth_from_batch(batch, from_batch)


def test_evaluation_modules_do_not_import_tensorflow():
  import os
  import subprocess
  import sys
  code = ('import sys\n'
          'from faster_rcnn_tf.evaluation import coco_metrics, common, detections_io, '
          'report, voc_metrics\n'
          'bad = [m for m in ("tensorflow", "keras", "matplotlib.pyplot") if m in sys.modules]\n'
          'assert not bad, bad\n')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, '-c', code], cwd=root, check=True, timeout=60)
