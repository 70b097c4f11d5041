"""PASCAL VOC detection average precision (numpy only).

Matching follows the VOC devkit (VOCevalDet.m / the Python `voc_eval` port), per class:

  1. All detections of the class (over all images) are ranked by descending score.
     TIES: we sort stably, so detections with equal scores keep the order in which they
     were given. (The Python devkit uses `np.argsort(-confidence)`, an unstable
     quicksort, so its result for ties depends on numpy internals.)
  2. Each detection, in rank order, looks at the ground-truth objects of the same image
     and class and takes the one with the largest IoU (ties: the first object in the
     image's ground-truth order, like `np.argmax`). Let ovmax be that IoU.
       * ovmax >= iou_threshold and the object is difficult -> ignored (neither TP nor FP);
       * ovmax >= iou_threshold and the object is not yet detected -> TP, object marked;
       * ovmax >= iou_threshold and the object was already detected -> FP (duplicate);
         (the devkit does NOT fall back to the next best object, and neither do we);
       * ovmax < iou_threshold, or no object of the class in the image -> FP.
     THRESHOLD: `>=`, as in the MATLAB devkit (`ovmax >= VOCopts.minoverlap`). The
     Python port (py-faster-rcnn voc_eval.py) uses `ovmax > ovthresh`; they differ only
     for an IoU of exactly 0.5.
  3. recall = cumulative TP / number of NON-difficult objects of the class;
     precision = cumulative TP / (cumulative TP + cumulative FP).
     Ignored detections are dropped from the curves (in the devkit they repeat the
     previous point, which changes no AP).

IoU uses the project's continuous coordinates: area = (ymax - ymin) * (xmax - xmin).
The devkit works on 1-based inclusive integer pixel indices and adds 1 to widths and
heights; for the same physical boxes (continuous = VOC index - 1 for the min corner, see
`ops.box_ops.voc_to_boxes`) the two IoUs are identical, so converted VOC annotations
score exactly as in the devkit.

AP from a precision/recall curve (`voc_ap`):
  * use_07_metric=True ("voc07"): 11-point interpolated AP, the mean over
    t in {0, 0.1, ..., 1} of max(precision[recall >= t]) (0 when no point reaches t).
    The thresholds are the exact decimals i/10; the Python devkit's
    `np.arange(0., 1.1, 0.1)` yields 0.30000000000000004, 0.6000000000000001 and
    0.7000000000000001, which wrongly excludes a recall of exactly 0.3 / 0.6 / 0.7.
  * use_07_metric=False ("voc", VOC2010+): area under the monotone precision envelope,
    sum over recall steps of (r_{i+1} - r_i) * max(precision at recall >= r_{i+1}).

Classes with no non-difficult ground truth get AP = NaN (the devkit divides by zero)
and are excluded from mAP; a class with ground truth but no detections gets AP = 0.
"""

from typing import Any, Hashable, Mapping

import numpy as np

from faster_rcnn_tf.evaluation import common

# Detection/ground-truth pairs handled per vectorised chunk (bounds peak memory).
_MAX_PAIRS_PER_CHUNK = 1 << 22


def voc_ap(recall, precision, use_07_metric: bool = False) -> float:
  """AP of one class from its ranked precision/recall curve.

  Args:
    recall: float [D], non-decreasing (cumulative TP / #non-difficult objects).
    precision: float [D], same length.
    use_07_metric: True for the VOC2007 11-point AP, False for the VOC2010+ area AP.
  Returns:
    AP as a Python float; 0.0 for empty curves. NaN entries in recall (class without
    ground truth) give NaN.
  """
  recall = np.asarray(recall, dtype=np.float64).reshape(-1)
  precision = np.asarray(precision, dtype=np.float64).reshape(-1)
  if recall.shape != precision.shape:
    raise ValueError(f'recall {recall.shape} and precision {precision.shape} differ in shape')
  if np.isnan(recall).any():
    return float('nan')
  if use_07_metric:
    total = 0.0
    for i in range(11):
      reached = recall >= i / 10.0
      total += precision[reached].max() if reached.any() else 0.0
    return float(total / 11.0)
  mrec = np.concatenate([[0.0], recall, [1.0]])
  mpre = np.concatenate([[0.0], precision, [0.0]])
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
  steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
  return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _best_match(det_img, det_cls, det_boxes, obj_img, obj_cls, obj_boxes, num_images):
  """For each detection: the object (same image and class) with the largest IoU.

  Returns (ovmax float64 [D], -inf when the image has no object of the class;
           jmax int64 [D], index into the object arrays, -1 when none).
  Vectorised over all (detection, candidate object) pairs, in bounded chunks.
  """
  num_det = det_img.shape[0]
  ovmax = np.full(num_det, -np.inf)
  jmax = np.full(num_det, -1, np.int64)
  obj_key = obj_cls * num_images + obj_img
  obj_order = np.argsort(obj_key, kind='stable')  # keeps ground-truth order per image
  obj_key_sorted = obj_key[obj_order]
  det_key = det_cls * num_images + det_img
  first = np.searchsorted(obj_key_sorted, det_key, side='left')
  counts = np.searchsorted(obj_key_sorted, det_key, side='right') - first
  ends = np.cumsum(counts)
  start_det = 0
  while start_det < num_det:
    # Largest chunk [start_det, stop_det) with at most _MAX_PAIRS_PER_CHUNK pairs (>= 1 det).
    base = ends[start_det - 1] if start_det else 0
    stop_det = int(np.searchsorted(ends, base + _MAX_PAIRS_PER_CHUNK, side='right'))
    stop_det = min(max(stop_det, start_det + 1), num_det)
    c = counts[start_det:stop_det]
    total = int(c.sum())
    if total:
      local = np.arange(stop_det - start_det)
      pair_det = np.repeat(local, c)
      offsets = np.cumsum(c) - c
      pair_obj = obj_order[np.repeat(first[start_det:stop_det], c)
                           + np.arange(total) - offsets[pair_det]]
      iou = common.paired_iou(det_boxes[start_det:stop_det][pair_det], obj_boxes[pair_obj])
      has = c > 0
      best = np.maximum.reduceat(iou, offsets[has])
      chunk_ovmax = np.full(stop_det - start_det, -np.inf)
      chunk_ovmax[has] = best
      is_best = iou == chunk_ovmax[pair_det]
      best_det = pair_det[is_best]
      first_best = np.concatenate([[True], best_det[1:] != best_det[:-1]])
      ovmax[start_det:stop_det] = chunk_ovmax
      jmax[start_det + best_det[first_best]] = pair_obj[is_best][first_best]
    start_det = stop_det
  return ovmax, jmax


def evaluate_voc(gt: Mapping[Hashable, Mapping[str, Any]], detections: Any, num_classes: int,
                 iou_threshold: float = 0.5, use_07_metric: bool = False) -> dict:
  """PASCAL VOC AP per class and mAP (see the module docstring for the exact rules).

  Args:
    gt: image_id -> {'boxes': float [N, 4] yxyx, 'classes': int [N] in 1..K,
      'difficult': bool [N] (optional)}, original-image pixels. Every evaluated image
      must be present, also those without objects.
    detections: `common.Detections`, a sequence of (image_id, class_id, score, box_yxyx),
      or a mapping with 'image_ids', 'classes', 'scores', 'boxes' (same box convention).
    num_classes: K.
    iou_threshold: a detection matches when IoU >= this.
    use_07_metric: True for VOC2007 11-point AP, False for the VOC2010+ area AP.
  Returns a dict:
    'ap':        float64 [K], ap[k - 1] is class k's AP; NaN when the class has no
                 non-difficult object.
    'map':       float, mean of the non-NaN APs (NaN when all are NaN).
    'precision': list of K float64 arrays, the ranked precision curve of each class
                 (ignored detections removed).
    'recall':    list of K float64 arrays, same length (all NaN when the class has no
                 non-difficult object).
    'scores':    list of K float64 arrays, the score at each curve point.
    'num_gt':    int64 [K], non-difficult objects per class.
    'num_difficult': int64 [K], difficult objects per class.
    'num_det':   int64 [K], detections per class (including ignored ones).
    'num_tp', 'num_fp', 'num_ignored': int64 [K].
    'metric':    'voc07' or 'voc';  'iou_threshold': float.
  Raises:
    ValueError: a detection on an image missing from `gt`, a class outside 1..K,
      non-finite scores/boxes, or malformed ground truth.
  """
  num_classes = int(num_classes)
  if num_classes < 1:
    raise ValueError(f'num_classes must be >= 1, got {num_classes}')
  (_, image_index, obj_img, obj_cls, obj_boxes,
   obj_difficult) = common.normalize_ground_truth(gt, num_classes)
  dets = common.as_detections(detections)
  det_img = common.image_positions(dets.image_ids, image_index)
  det_cls = dets.classes
  if det_cls.size and (det_cls.min() < 1 or det_cls.max() > num_classes):
    bad = int(np.argmax((det_cls < 1) | (det_cls > num_classes)))
    raise ValueError(f'detection {bad}: class {int(det_cls[bad])} is outside 1..{num_classes}')

  ovmax, jmax = _best_match(det_img, det_cls, dets.boxes, obj_img, obj_cls, obj_boxes,
                            max(len(image_index), 1))

  # Rank: class-major, then descending score, then input order (stable ties).
  order = np.lexsort((np.arange(det_cls.shape[0]), -dets.scores, det_cls))
  ranked_cls = det_cls[order]
  matched = ovmax[order] >= iou_threshold
  ranked_obj = jmax[order]
  ignored = np.zeros(order.shape[0], bool)
  ignored[matched] = obj_difficult[ranked_obj[matched]]
  candidate = matched & ~ignored
  tp = np.zeros(order.shape[0], bool)
  cand_pos = np.nonzero(candidate)[0]
  # The first-ranked candidate for each object is the TP; later ones are duplicates.
  # Object indices are unique across classes, so doing this globally is per class.
  _, first_pos = np.unique(ranked_obj[cand_pos], return_index=True)
  tp[cand_pos[first_pos]] = True
  fp = ~tp & ~ignored

  num_gt = np.bincount(obj_cls[~obj_difficult], minlength=num_classes + 1)[1:]
  num_diff = np.bincount(obj_cls[obj_difficult], minlength=num_classes + 1)[1:]
  bounds = np.searchsorted(ranked_cls, np.arange(1, num_classes + 2), side='left')
  ranked_scores = dets.scores[order]
  ap = np.full(num_classes, np.nan)
  precisions, recalls, curve_scores = [], [], []
  num_det = np.zeros(num_classes, np.int64)
  num_tp = np.zeros(num_classes, np.int64)
  num_fp = np.zeros(num_classes, np.int64)
  num_ign = np.zeros(num_classes, np.int64)
  for k in range(num_classes):
    sl = slice(bounds[k], bounds[k + 1])
    keep = ~ignored[sl]
    tp_cum = np.cumsum(tp[sl][keep], dtype=np.int64)
    fp_cum = np.cumsum(fp[sl][keep], dtype=np.int64)
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
    if num_gt[k] > 0:
      recall = tp_cum / float(num_gt[k])
      ap[k] = voc_ap(recall, precision, use_07_metric)
    else:
      recall = np.full(tp_cum.shape[0], np.nan)
    precisions.append(precision.astype(np.float64))
    recalls.append(recall.astype(np.float64))
    curve_scores.append(ranked_scores[sl][keep])
    num_det[k] = bounds[k + 1] - bounds[k]
    num_tp[k] = tp_cum[-1] if tp_cum.size else 0
    num_fp[k] = fp_cum[-1] if fp_cum.size else 0
    num_ign[k] = num_det[k] - keep.sum()
  valid = ~np.isnan(ap)
  return {
      'ap': ap,
      'map': float(ap[valid].mean()) if valid.any() else float('nan'),
      'precision': precisions,
      'recall': recalls,
      'scores': curve_scores,
      'num_gt': num_gt.astype(np.int64),
      'num_difficult': num_diff.astype(np.int64),
      'num_det': num_det,
      'num_tp': num_tp,
      'num_fp': num_fp,
      'num_ignored': num_ign,
      'metric': 'voc07' if use_07_metric else 'voc',
      'iou_threshold': float(iou_threshold),
  }
