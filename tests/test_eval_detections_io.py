"""COCO results files: round trip, model outputs conversion, and every bad-input error."""

import json
import os
import re

import numpy as np
import pytest

from faster_rcnn_tf import inputs
from faster_rcnn_tf.evaluation import common
from faster_rcnn_tf.evaluation import detections_io as dio

CATEGORY_IDS = [1, 3, 24]
IMAGE_IDS = [10, 11, 12]


def _detections():
  return common.as_detections([
      (10, 1, 0.9, [10.5, 20.25, 30.0, 45.125]),
      (10, 3, 0.1, [0.0, 0.0, 5.0, 5.0]),
      (12, 2, 0.55, [1.0, 2.0, 1.0, 9.0]),  # zero height is allowed
  ])


def test_round_trip(tmp_path):
  dets = _detections()
  results = dio.detections_to_coco_results(dets, CATEGORY_IDS)
  assert results[0] == {'image_id': 10, 'category_id': 1,
                        'bbox': [20.25, 10.5, 24.875, 19.5], 'score': 0.9}
  assert results[1]['category_id'] == 24
  path = tmp_path / 'sub' / 'detections.json'
  dio.write_coco_results(str(path), results, IMAGE_IDS, CATEGORY_IDS)
  assert [p.name for p in path.parent.iterdir()] == ['detections.json']  # no temp left
  read = dio.read_coco_results(str(path), IMAGE_IDS, CATEGORY_IDS)
  assert read == results
  back = dio.coco_results_to_detections(read, CATEGORY_IDS)
  assert back.image_ids.tolist() == dets.image_ids.tolist()
  np.testing.assert_array_equal(back.classes, dets.classes)
  np.testing.assert_array_equal(back.scores, dets.scores)
  np.testing.assert_allclose(back.boxes, dets.boxes, atol=1e-12)


def test_empty_round_trip(tmp_path):
  path = str(tmp_path / 'empty.json')
  dio.write_coco_results(path, [])
  assert dio.read_coco_results(path) == []
  assert len(dio.coco_results_to_detections([])) == 0


def test_outputs_to_detections():
  outputs = {
      inputs.DETECTION_BOXES: np.array([
          [[20, 40, 60, 80], [0, 0, 10, 10], [1, 1, 2, 2]],
          [[-4, -4, 250, 250], [8, 8, 16, 16], [0, 0, 0, 0]]], np.float32),
      inputs.DETECTION_SCORES: np.array([[0.9, 0.8, 0.7], [0.6, 0.5, 0.0]], np.float32),
      inputs.DETECTION_CLASSES: np.array([[1, 2, 3], [2, 1, 0]], np.int32),
      inputs.NUM_DETECTIONS: np.array([2, 2], np.int32),  # image 0's third row is stale
  }
  dets = dio.outputs_to_detections(outputs, image_ids=np.array([5, 6], np.int64),
                                   scales=np.array([2.0, 0.5], np.float32),
                                   original_sizes=np.array([[100, 100], [300, 400]]))
  assert dets.image_ids.tolist() == [5, 5, 6, 6]
  assert dets.classes.tolist() == [1, 2, 2, 1]
  np.testing.assert_allclose(dets.scores, [0.9, 0.8, 0.6, 0.5], rtol=1e-6)
  np.testing.assert_allclose(dets.boxes, [[10, 20, 30, 40], [0, 0, 5, 5],
                                          [0, 0, 300, 400],  # clipped to (300, 400)
                                          [16, 16, 32, 32]])
  results = dio.detections_to_coco_results(dets, CATEGORY_IDS)
  assert results[2]['bbox'] == [0.0, 0.0, 400.0, 300.0]
  assert results[2]['category_id'] == 3


def _write(tmp_path, entries, name='bad.json'):
  path = tmp_path / name
  with open(path, 'w') as f:
    if isinstance(entries, str):
      f.write(entries)
    else:
      json.dump(entries, f)  # allow_nan: NaN / Infinity tokens, as other tools write them
  return str(path)


def _good(**overrides):
  entry = {'image_id': 10, 'category_id': 1, 'bbox': [1.0, 2.0, 3.0, 4.0], 'score': 0.5}
  entry.update(overrides)
  return entry


@pytest.mark.parametrize('bad, problem', [
    (_good(image_id=99), 'unknown image_id 99'),
    (_good(category_id=2), 'unknown category_id 2'),
    (_good(bbox=[1.0, 2.0, 3.0]), r'bbox must have 4 numbers \[x, y, w, h\], got 3'),
    (_good(bbox=[1.0, 2.0, 3.0, 4.0, 5.0]), 'bbox must have 4 numbers .*got 5'),
    (_good(bbox='1 2 3 4'), 'bbox must be a list'),
    (_good(bbox=[1.0, 2.0, -3.0, 4.0]), 'bbox has a negative width or height'),
    (_good(bbox=[1.0, 2.0, 3.0, -0.5]), 'bbox has a negative width or height'),
    (_good(bbox=[float('nan'), 2.0, 3.0, 4.0]), 'bbox has a non-finite value'),
    (_good(bbox=[1.0, 2.0, float('inf'), 4.0]), 'bbox has a non-finite value'),
    (_good(bbox=[1.0, None, 3.0, 4.0]), 'bbox must contain numbers'),
    (_good(score=float('nan')), 'score is not finite'),
    (_good(score='high'), 'score must be a number'),
    (_good(image_id=10.5), 'image_id must be an integer'),
    (_good(category_id=True), 'category_id must be an integer'),
    ({'image_id': 10, 'bbox': [0, 0, 1, 1], 'score': 1.0}, r"missing key\(s\) \['category_id'\]"),
    ([1, 2], 'expected an object'),
])
def test_read_rejects_bad_entry(tmp_path, bad, problem):
  path = _write(tmp_path, [_good(), _good(), bad])
  with pytest.raises(ValueError, match=f'^{re.escape(path)}: entry 2: {problem}'):
    dio.read_coco_results(path, IMAGE_IDS, CATEGORY_IDS)


def test_read_rejects_bad_file(tmp_path):
  path = _write(tmp_path, {'image_id': 1})
  with pytest.raises(ValueError, match=f'^{re.escape(path)}: expected a JSON list'):
    dio.read_coco_results(path)
  path = _write(tmp_path, '[{"image_id": 1,', name='truncated.json')
  with pytest.raises(ValueError, match=f'^{re.escape(path)}: not valid JSON'):
    dio.read_coco_results(path)


def test_unrestricted_ids_are_accepted(tmp_path):
  path = _write(tmp_path, [_good(image_id=12345, category_id=90)])
  assert dio.read_coco_results(path)[0]['image_id'] == 12345


def test_write_validates_and_leaves_existing_file(tmp_path):
  path = str(tmp_path / 'out.json')
  dio.write_coco_results(path, [_good()])
  with pytest.raises(ValueError, match=f'^{re.escape(path)}: entry 1: unknown image_id 77'):
    dio.write_coco_results(path, [_good(), _good(image_id=77)], IMAGE_IDS)
  with pytest.raises(ValueError,
                     match=f'^{re.escape(path)}: entry 0: bbox has a negative width or height'):
    dio.write_coco_results(path, [_good(bbox=np.array([0.0, 0.0, -1.0, 1.0]))])
  assert dio.read_coco_results(path) == [_good()]  # the previous file is intact
  assert sorted(os.listdir(tmp_path)) == ['out.json']


def test_conversion_errors():
  with pytest.raises(ValueError, match=r'detection 0: inverted box'):
    dio.detections_to_coco_results([(1, 1, 0.5, [5, 0, 1, 1])])
  with pytest.raises(ValueError, match=r'detection 0: class 4 is outside 1\.\.3'):
    dio.detections_to_coco_results([(1, 4, 0.5, [0, 0, 1, 1])], CATEGORY_IDS)
  with pytest.raises(ValueError, match='result 0: unknown category_id 2'):
    dio.coco_results_to_detections([_good(category_id=2)], CATEGORY_IDS)
