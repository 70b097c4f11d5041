"""PASCAL VOC AP: hand-worked cases and random cases against a loop-based reference."""

import math

import numpy as np
import pytest

from faster_rcnn_tf.evaluation import voc_metrics
from faster_rcnn_tf.evaluation.voc_metrics import evaluate_voc, voc_ap


# ---------------------------------------------------------------------------------------
# Independent reference: a plain-Python transcription of the devkit's voc_eval / voc_ap.
# Deliberate, documented differences from the Python devkit (the same choices as the
# module under test): IoU >= threshold (the MATLAB devkit's rule; the Python port uses >),
# a stable sort for score ties (Python's sorted() is stable), continuous coordinates
# (no +1), exact 11-point thresholds i / 10 (np.arange(0, 1.1, 0.1) has 0.30000000000000004
# etc.), and NaN for a class without non-difficult ground truth.
# ---------------------------------------------------------------------------------------

def ref_iou(a, b):
  ih = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
  iw = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
  inter = iw * ih
  area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
  area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
  union = area_a + area_b - inter
  return inter / union if union > 0 else 0.0


def ref_voc_ap(rec, prec, use_07_metric):
  if use_07_metric:
    ap = 0.0
    for i in range(11):
      t = i / 10.0
      p = [pr for r, pr in zip(rec, prec) if r >= t]
      ap += (max(p) if p else 0.0) / 11.0
    return ap
  mrec = [0.0] + list(rec) + [1.0]
  mpre = [0.0] + list(prec) + [0.0]
  for i in range(len(mpre) - 1, 0, -1):
    mpre[i - 1] = max(mpre[i - 1], mpre[i])
  ap = 0.0
  for i in range(len(mrec) - 1):
    if mrec[i + 1] != mrec[i]:
      ap += (mrec[i + 1] - mrec[i]) * mpre[i + 1]
  return ap


def ref_voc_eval(gt, dets, classname, ovthresh=0.5, use_07_metric=False):
  """Returns (rec, prec, ap, tp, fp) with the devkit's per-detection tp/fp arrays."""
  class_recs = {}
  npos = 0
  for image_id, ann in gt.items():
    objs = [j for j in range(len(ann['classes'])) if int(ann['classes'][j]) == classname]
    difficult = [bool(ann['difficult'][j]) for j in objs]
    class_recs[image_id] = {'bbox': [list(map(float, ann['boxes'][j])) for j in objs],
                            'difficult': difficult, 'det': [False] * len(objs)}
    npos += sum(1 for d in difficult if not d)
  mine = [d for d in dets if int(d[1]) == classname]
  order = sorted(range(len(mine)), key=lambda i: -mine[i][2])  # stable
  tp = [0.0] * len(mine)
  fp = [0.0] * len(mine)
  for rank, i in enumerate(order):
    image_id, _, _, bb = mine[i]
    r = class_recs[image_id]
    ovmax, jmax = -math.inf, -1
    for j, g in enumerate(r['bbox']):
      ov = ref_iou(list(map(float, bb)), g)
      if ov > ovmax:
        ovmax, jmax = ov, j
    if ovmax >= ovthresh:
      if not r['difficult'][jmax]:
        if not r['det'][jmax]:
          tp[rank] = 1.0
          r['det'][jmax] = True
        else:
          fp[rank] = 1.0
    else:
      fp[rank] = 1.0
  ctp, cfp, rec, prec = 0.0, 0.0, [], []
  for t, f in zip(tp, fp):
    ctp += t
    cfp += f
    rec.append(ctp / npos if npos else math.nan)
    prec.append(ctp / max(ctp + cfp, np.finfo(np.float64).eps))
  ap = ref_voc_ap(rec, prec, use_07_metric) if npos else math.nan
  return rec, prec, ap, tp, fp


# ---------------------------------------------------------------------------------------
# Hand-worked cases.
# ---------------------------------------------------------------------------------------

def _scenario():
  gt = {
      'img1': {'boxes': [[0, 0, 10, 10], [20, 20, 30, 30]], 'classes': [1, 1],
               'difficult': [False, True]},
      'img2': {'boxes': [[0, 0, 10, 10], [5, 5, 15, 15]], 'classes': [1, 2],
               'difficult': [False, False]},
      'img3': {'boxes': np.zeros((0, 4)), 'classes': np.zeros(0, int)},  # no objects
  }
  dets = [
      ('img1', 1, 0.9, [0, 0, 10, 10]),    # TP (img1 object 0)
      ('img1', 1, 0.8, [0, 0, 10, 10]),    # FP: duplicate of an already detected object
      ('img1', 1, 0.7, [20, 20, 30, 30]),  # ignored: matches a difficult object
      ('img2', 1, 0.6, [50, 50, 60, 60]),  # FP: no overlap
      ('img2', 1, 0.5, [0, 0, 10, 20]),    # IoU = 100 / 200 = 0.5 exactly -> TP (>=)
      ('img3', 3, 0.95, [0, 0, 5, 5]),     # class 3 has no ground truth
  ]
  return gt, dets


def test_hand_scenario_voc_area():
  gt, dets = _scenario()
  r = evaluate_voc(gt, dets, num_classes=3, use_07_metric=False)
  # Class 1: 2 non-difficult objects. Non-ignored ranking: TP, FP, FP, TP.
  #   recall    = .5, .5, .5, 1      precision = 1, 1/2, 1/3, 1/2
  #   envelope at recall .5 -> 1, at recall 1 -> 1/2; AP = .5 * 1 + .5 * .5 = .75
  np.testing.assert_allclose(r['recall'][0], [0.5, 0.5, 0.5, 1.0])
  np.testing.assert_allclose(r['precision'][0], [1.0, 0.5, 1 / 3, 0.5])
  np.testing.assert_allclose(r['scores'][0], [0.9, 0.8, 0.6, 0.5])
  assert r['ap'][0] == pytest.approx(0.75, abs=1e-12)
  # Class 2: one object, no detections -> 0. Class 3: no ground truth -> NaN.
  assert r['ap'][1] == 0.0
  assert math.isnan(r['ap'][2])
  assert r['map'] == pytest.approx((0.75 + 0.0) / 2, abs=1e-12)
  np.testing.assert_array_equal(r['num_gt'], [2, 1, 0])
  np.testing.assert_array_equal(r['num_difficult'], [1, 0, 0])
  np.testing.assert_array_equal(r['num_det'], [5, 0, 1])
  np.testing.assert_array_equal(r['num_tp'], [2, 0, 0])
  np.testing.assert_array_equal(r['num_fp'], [2, 0, 1])
  np.testing.assert_array_equal(r['num_ignored'], [1, 0, 0])
  assert r['metric'] == 'voc'
  assert r['recall'][1].size == 0 and r['precision'][1].size == 0
  assert np.isnan(r['recall'][2]).all() and r['precision'][2].tolist() == [0.0]


def test_hand_scenario_voc07():
  gt, dets = _scenario()
  r = evaluate_voc(gt, dets, num_classes=3, use_07_metric=True)
  # t = 0, .1, .., .5 -> max precision 1 (6 thresholds); t = .6 .. 1 -> only the point at
  # recall 1 with precision 1/2 (5 thresholds). AP = (6 + 5 * .5) / 11.
  assert r['ap'][0] == pytest.approx(8.5 / 11, abs=1e-12)
  assert r['ap'][1] == 0.0
  assert math.isnan(r['ap'][2])
  assert r['map'] == pytest.approx(8.5 / 11 / 2, abs=1e-12)
  assert r['metric'] == 'voc07'


def test_threshold_is_inclusive():
  gt, dets = _scenario()
  # Just above 0.5 the IoU-0.5 detection becomes a FP: ranking TP, FP, FP, FP.
  r = evaluate_voc(gt, dets, num_classes=3, iou_threshold=0.5 + 1e-9)
  np.testing.assert_allclose(r['precision'][0], [1.0, 0.5, 1 / 3, 0.25])
  assert r['ap'][0] == pytest.approx(0.5, abs=1e-12)


def test_score_ties_keep_input_order():
  gt = {7: {'boxes': [[0, 0, 10, 10]], 'classes': [1]}}
  fp_first = [(7, 1, 0.5, [40, 40, 50, 50]), (7, 1, 0.5, [0, 0, 10, 10])]
  # FP then TP: precision 0, 1/2 at recall 0, 1 -> area AP .5; 11-point: every t has .5.
  r = evaluate_voc(gt, fp_first, 1)
  np.testing.assert_allclose(r['precision'][0], [0.0, 0.5])
  assert r['ap'][0] == pytest.approx(0.5)
  assert evaluate_voc(gt, fp_first, 1, use_07_metric=True)['ap'][0] == pytest.approx(0.5)
  # TP then FP: precision 1, 1/2 at recall 1, 1 -> AP 1 for both metrics.
  tp_first = fp_first[::-1]
  assert evaluate_voc(gt, tp_first, 1)['ap'][0] == pytest.approx(1.0)
  assert evaluate_voc(gt, tp_first, 1, use_07_metric=True)['ap'][0] == pytest.approx(1.0)


def test_duplicate_objects_no_fallback_to_second_best():
  # Two identical objects; both detections pick the first (argmax ties -> first object),
  # the second is a duplicate FP even though the other object is free (devkit rule).
  gt = {1: {'boxes': [[0, 0, 10, 10], [0, 0, 10, 10]], 'classes': [1, 1]}}
  dets = [(1, 1, 0.9, [0, 0, 10, 10]), (1, 1, 0.8, [0, 0, 10, 10])]
  r = evaluate_voc(gt, dets, 1)
  np.testing.assert_allclose(r['recall'][0], [0.5, 0.5])
  np.testing.assert_allclose(r['precision'][0], [1.0, 0.5])
  assert r['ap'][0] == pytest.approx(0.5)  # .5 * 1
  assert evaluate_voc(gt, dets, 1, use_07_metric=True)['ap'][0] == pytest.approx(6 / 11)


def test_best_overlap_difficult_object_wins():
  # The first detection overlaps the difficult object best (IoU 1 vs 100/120): ignored,
  # not a TP on the non-difficult object. The second detection is then the TP.
  gt = {1: {'boxes': [[0, 0, 10, 10], [0, 0, 10, 12]], 'classes': [1, 1],
            'difficult': [False, True]}}
  dets = [(1, 1, 0.9, [0, 0, 10, 12]), (1, 1, 0.8, [0, 0, 10, 10])]
  r = evaluate_voc(gt, dets, 1)
  np.testing.assert_allclose(r['precision'][0], [1.0])
  np.testing.assert_allclose(r['recall'][0], [1.0])
  assert r['ap'][0] == pytest.approx(1.0)
  assert r['num_ignored'][0] == 1


def test_eleven_point_recall_exactly_three_tenths():
  # 10 objects; ranking: 3 TP, 3 FP, 7 TP. Recall reaches exactly 0.3 with precision 1.
  gt = {0: {'boxes': [[0, 20 * i, 10, 20 * i + 10] for i in range(10)], 'classes': [1] * 10}}
  dets = []
  for i in range(3):
    dets.append((0, 1, 1.0 - 0.01 * i, [0, 20 * i, 10, 20 * i + 10]))
  for i in range(3):
    dets.append((0, 1, 0.9 - 0.01 * i, [500, 500, 510, 510]))
  for i in range(3, 10):
    dets.append((0, 1, 0.8 - 0.01 * i, [0, 20 * i, 10, 20 * i + 10]))
  # Precision over recall .4 .. 1 rises to 10/13, the tail maximum.
  # 11-point: t in {0, .1, .2, .3} -> 1 (recall 0.3 reached with precision 1), the 7
  # thresholds .4 .. 1 -> 10/13. (np.arange's 0.30000000000000004 would give 10/13 at t=.3.)
  r07 = evaluate_voc(gt, dets, 1, use_07_metric=True)
  assert r07['ap'][0] == pytest.approx((4 + 7 * 10 / 13) / 11, abs=1e-12)
  r = evaluate_voc(gt, dets, 1)
  assert r['ap'][0] == pytest.approx(0.3 + 0.7 * 10 / 13, abs=1e-12)


def test_voc_ap_edge_cases():
  assert voc_ap([], [], use_07_metric=False) == 0.0
  assert voc_ap([], [], use_07_metric=True) == 0.0
  assert voc_ap([1.0], [1.0]) == 1.0
  assert voc_ap([1.0], [1.0], use_07_metric=True) == 1.0
  assert math.isnan(voc_ap([math.nan], [0.0]))


def test_all_classes_without_ground_truth_give_nan_map():
  gt = {1: {'boxes': np.zeros((0, 4)), 'classes': []}}
  r = evaluate_voc(gt, [(1, 1, 0.5, [0, 0, 1, 1])], 2)
  assert np.isnan(r['ap']).all() and math.isnan(r['map'])


def test_input_validation():
  gt = {1: {'boxes': [[0, 0, 10, 10]], 'classes': [1]}}
  with pytest.raises(ValueError, match="detection 1: image_id 2 is not in the ground truth"):
    evaluate_voc(gt, [(1, 1, 0.5, [0, 0, 1, 1]), (2, 1, 0.5, [0, 0, 1, 1])], 1)
  with pytest.raises(ValueError, match=r'detection 0: class 3 is outside 1\.\.2'):
    evaluate_voc(gt, [(1, 3, 0.5, [0, 0, 1, 1])], 2)
  with pytest.raises(ValueError, match='score is not finite'):
    evaluate_voc(gt, [(1, 1, math.nan, [0, 0, 1, 1])], 1)
  with pytest.raises(ValueError, match='box must have 4 numbers'):
    evaluate_voc(gt, [(1, 1, 0.5, [0, 0, 1])], 1)
  with pytest.raises(ValueError, match=r'class ids must be in 1\.\.1'):
    evaluate_voc({1: {'boxes': [[0, 0, 1, 1]], 'classes': [2]}}, [], 1)


# ---------------------------------------------------------------------------------------
# Random cases against the reference.
# ---------------------------------------------------------------------------------------

def _random_case(rng, num_classes):
  gt, dets = {}, []
  for image_id in range(int(rng.integers(1, 7))):
    n = int(rng.integers(0, 6))
    yx = rng.integers(0, 40, size=(n, 2))
    hw = rng.integers(1, 20, size=(n, 2))
    boxes = np.concatenate([yx, yx + hw], axis=1).astype(np.float64)
    if n >= 2 and rng.random() < 0.3:
      boxes[1] = boxes[0]  # identical objects: argmax ties
    # The last class never has ground truth in about half of the cases.
    top = num_classes if rng.random() < 0.5 else num_classes - 1
    classes = rng.integers(1, top + 1, size=n)
    gt[image_id] = {'boxes': boxes, 'classes': classes, 'difficult': rng.random(n) < 0.25}
    for _ in range(int(rng.integers(0, 12))):
      if n and rng.random() < 0.7:
        j = int(rng.integers(n))
        box = boxes[j] + rng.integers(-3, 4, size=4)  # integer jitter: IoU == 0.5 happens
        cls = int(classes[j]) if rng.random() < 0.85 else int(rng.integers(1, num_classes + 1))
      else:
        y, x = rng.integers(0, 40, size=2)
        box = np.array([y, x, y + rng.integers(1, 20), x + rng.integers(1, 20)], np.float64)
        cls = int(rng.integers(1, num_classes + 1))
      score = float(rng.integers(0, 6)) / 5.0  # coarse scores: many ties
      dets.append((image_id, cls, score, box))
  return gt, dets


@pytest.mark.parametrize('use_07_metric', [False, True])
def test_random_cases_match_reference(use_07_metric):
  rng = np.random.default_rng(1234 + use_07_metric)
  num_classes = 4
  for _ in range(150):
    gt, dets = _random_case(rng, num_classes)
    r = evaluate_voc(gt, dets, num_classes, use_07_metric=use_07_metric)
    ref_aps = []
    for c in range(1, num_classes + 1):
      rec, prec, ap, tp, fp = ref_voc_eval(gt, dets, c, 0.5, use_07_metric)
      ref_aps.append(ap)
      if math.isnan(ap):
        assert math.isnan(r['ap'][c - 1])
        continue
      assert r['ap'][c - 1] == pytest.approx(ap, abs=1e-6)
      counted = [i for i in range(len(tp)) if tp[i] + fp[i] > 0]  # drop ignored
      np.testing.assert_allclose(r['recall'][c - 1], [rec[i] for i in counted], atol=1e-12)
      np.testing.assert_allclose(r['precision'][c - 1], [prec[i] for i in counted], atol=1e-12)
      assert r['num_tp'][c - 1] == sum(tp) and r['num_fp'][c - 1] == sum(fp)
    valid = [a for a in ref_aps if not math.isnan(a)]
    if valid:
      assert r['map'] == pytest.approx(sum(valid) / len(valid), abs=1e-6)
    else:
      assert math.isnan(r['map'])


def test_array_input_and_chunking_give_same_result(monkeypatch):
  rng = np.random.default_rng(7)
  gt, dets = _random_case(rng, 3)
  while len(dets) < 5:
    gt, dets = _random_case(rng, 3)
  expected = evaluate_voc(gt, dets, 3)
  arrays = {'image_ids': np.array([d[0] for d in dets]),
            'classes': np.array([d[1] for d in dets], np.int32),
            'scores': np.array([d[2] for d in dets], np.float32).astype(np.float64),
            'boxes': np.array([d[3] for d in dets], np.float32)}
  monkeypatch.setattr(voc_metrics, '_MAX_PAIRS_PER_CHUNK', 2)
  got = evaluate_voc(gt, arrays, 3)
  np.testing.assert_array_equal(got['ap'], expected['ap'])
  for a, b in zip(got['precision'], expected['precision']):
    np.testing.assert_array_equal(a, b)
