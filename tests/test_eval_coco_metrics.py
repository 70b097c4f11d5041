"""COCO metrics: our wrapper against pycocotools' COCOeval driven directly by the test."""

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from faster_rcnn_tf.evaluation import coco_metrics

CLASS_NAMES = ['person', 'car', 'zebra']
CATEGORY_IDS = [1, 3, 24]  # non-contiguous, as in COCO

# Our gt dict: yxyx boxes, classes 1..3; one small, medium, large object each, a difficult
# (crowd) object, an image without objects. Class 3 ('zebra') has no ground truth.
GT = {
    10: {'boxes': [[10, 20, 30, 45],        # small (20 x 25)
                   [100, 100, 160, 180],    # medium (60 x 80)
                   [0, 0, 5, 5]],           # difficult -> crowd
         'classes': [1, 2, 1], 'difficult': [False, False, True]},
    11: {'boxes': [[0, 0, 200, 150], [50, 60, 90, 100]],  # large, medium
         'classes': [1, 1], 'difficult': [False, False]},
    12: {'boxes': np.zeros((0, 4)), 'classes': np.zeros(0, int)},
}
SIZES = {10: (240, 320), 11: (480, 640), 12: (100, 100)}

# Detections (image_id, class, score, yxyx).
DETS = [
    (10, 1, 0.95, [11, 21, 30, 44]),
    (10, 1, 0.90, [10, 20, 30, 45]),      # duplicate
    (10, 2, 0.80, [102, 98, 158, 182]),
    (10, 1, 0.70, [0, 0, 5, 5]),          # on the crowd region
    (11, 1, 0.85, [5, 0, 190, 150]),
    (11, 1, 0.60, [52, 58, 92, 104]),
    (11, 2, 0.30, [50, 60, 90, 100]),     # wrong class
    (12, 3, 0.50, [10, 10, 40, 40]),      # class without ground truth
    (12, 1, 0.40, [0, 0, 20, 20]),
]


def _direct_gt_json():
  """The same ground truth written by hand in COCO's own format."""
  def xywh(y0, x0, y1, x1):
    return [x0, y0, x1 - x0, y1 - y0]
  anns = [
      {'id': 1, 'image_id': 10, 'category_id': 1, 'bbox': xywh(10, 20, 30, 45), 'area': 500.0,
       'iscrowd': 0},
      {'id': 2, 'image_id': 10, 'category_id': 3, 'bbox': xywh(100, 100, 160, 180),
       'area': 4800.0, 'iscrowd': 0},
      {'id': 3, 'image_id': 10, 'category_id': 1, 'bbox': xywh(0, 0, 5, 5), 'area': 25.0,
       'iscrowd': 1},
      {'id': 4, 'image_id': 11, 'category_id': 1, 'bbox': xywh(0, 0, 200, 150),
       'area': 30000.0, 'iscrowd': 0},
      {'id': 5, 'image_id': 11, 'category_id': 1, 'bbox': xywh(50, 60, 90, 100),
       'area': 1600.0, 'iscrowd': 0},
  ]
  images = [{'id': i, 'height': h, 'width': w} for i, (h, w) in SIZES.items()]
  cats = [{'id': c, 'name': n} for c, n in zip(CATEGORY_IDS, CLASS_NAMES)]
  return {'images': images, 'annotations': anns, 'categories': cats}


def _direct_results():
  cat = dict(zip(range(1, 4), CATEGORY_IDS))
  return [{'image_id': i, 'category_id': cat[c], 'bbox': [b[1], b[0], b[3] - b[1], b[2] - b[0]],
           'score': s} for i, c, s, b in DETS]


def _pycocotools_stats(gt_json, results, cat_ids=None):
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt_json)
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(copy.deepcopy(results))
    e = COCOeval(coco_gt, coco_dt, 'bbox')
    if cat_ids is not None:
      e.params.catIds = cat_ids
    e.evaluate()
    e.accumulate()
    e.summarize()
  return e.stats


def test_stats_equal_pycocotools(capsys):
  expected = _pycocotools_stats(_direct_gt_json(), _direct_results())
  got = coco_metrics.evaluate_coco(GT, DETS, CLASS_NAMES, CATEGORY_IDS, image_sizes=SIZES)
  assert list(got['stats']) == list(coco_metrics.STAT_NAMES)
  np.testing.assert_allclose([got['stats'][n] for n in coco_metrics.STAT_NAMES], expected,
                             rtol=0, atol=1e-12)
  # Sanity: the case exercises non-trivial values.
  assert 0 < got['stats']['AP'] < 1
  # pycocotools' printing is captured, and the summary text is kept.
  assert capsys.readouterr().out == ''
  assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]' in got['summary']
  assert len(got['summary'].strip().splitlines()) == 12
  assert 'Accumulating evaluation results' in got['log']
  np.testing.assert_array_equal(got['num_gt'], [4, 1, 0])
  np.testing.assert_array_equal(got['num_det'], [6, 2, 1])
  assert got['category_ids'] == CATEGORY_IDS


def test_per_class_ap_equals_single_category_eval():
  got = coco_metrics.evaluate_coco(GT, DETS, CLASS_NAMES, CATEGORY_IDS, image_sizes=SIZES)
  for k, cat in enumerate(CATEGORY_IDS):
    stats = _pycocotools_stats(_direct_gt_json(), _direct_results(), cat_ids=[cat])
    for name, idx in (('AP', 0), ('AP50', 1), ('AP75', 2)):
      if stats[idx] == -1:
        assert np.isnan(got['per_class'][name][k])
      else:
        assert got['per_class'][name][k] == pytest.approx(stats[idx], abs=1e-12)
  assert np.isnan(got['per_class']['AP'][2])  # 'zebra' has no ground truth


def test_build_ground_truth_matches_hand_written_json():
  built = coco_metrics.build_coco_ground_truth(GT, CLASS_NAMES, CATEGORY_IDS, SIZES)
  direct = _direct_gt_json()
  assert built['categories'] == direct['categories']
  assert built['images'] == direct['images']
  assert built['annotations'] == direct['annotations']


def test_optional_areas_are_used():
  gt = copy.deepcopy(GT)
  gt[10]['areas'] = [2000.0, 4800.0, 25.0]  # e.g. mask areas: object 1 becomes medium
  built = coco_metrics.build_coco_ground_truth(gt, CLASS_NAMES, CATEGORY_IDS)
  assert built['annotations'][0]['area'] == 2000.0
  assert 'height' not in built['images'][0]


def test_run_coco_eval_with_pycocotools_gt_and_no_results():
  coco_gt = coco_metrics.coco_api(_direct_gt_json())
  got = coco_metrics.run_coco_eval(coco_gt, [])
  # No detections: every slice here has ground truth, so every stat is 0.
  assert set(got['stats'].values()) == {0.0}
  np.testing.assert_array_equal(got['per_class']['AP'], [0.0, 0.0, np.nan])
  assert got['category_ids'] == sorted(CATEGORY_IDS)


def test_errors():
  with pytest.raises(ValueError, match='detection 0: image_id 99 is not in the ground truth'):
    coco_metrics.evaluate_coco(GT, [(99, 1, 0.5, [0, 0, 1, 1])], CLASS_NAMES, CATEGORY_IDS)
  with pytest.raises(ValueError, match=r'class 4 is outside 1\.\.3'):
    coco_metrics.evaluate_coco(GT, [(10, 4, 0.5, [0, 0, 1, 1])], CLASS_NAMES, CATEGORY_IDS)
  with pytest.raises(ValueError, match='integer image ids'):
    coco_metrics.evaluate_coco({'a': GT[10]}, [], CLASS_NAMES, CATEGORY_IDS)
  with pytest.raises(ValueError, match='2 category ids for 3 classes'):
    coco_metrics.build_coco_ground_truth(GT, CLASS_NAMES, [1, 2])
  coco_gt = coco_metrics.coco_api(_direct_gt_json())
  with pytest.raises(ValueError, match=r'category ids \[5\] are not in the ground truth'):
    coco_metrics.run_coco_eval(coco_gt, [], category_ids=[1, 5])
