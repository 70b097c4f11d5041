"""COCO box metrics through pycocotools' COCOeval (numpy + pycocotools, no TensorFlow).

Ground truth is built from the project's gt dict (see `common`):
  * one COCO image per gt entry (image ids must be integers; width/height from
    `image_sizes` when given — COCOeval does not use them for boxes);
  * one annotation per object: bbox [x, y, w, h] = [xmin, ymin, xmax - xmin, ymax - ymin]
    (0-based continuous pixels, as COCO), category_id = category_ids[class - 1];
  * DIFFICULT objects become `iscrowd = 1`: COCOeval then ignores detections matched to
    them (neither TP nor FP), the closest analogue of VOC's difficult flag, and the
    inverse of how COCO's own crowd annotations would be carried as difficult. Note that
    COCOeval matches crowd regions with intersection / detection area instead of IoU;
  * 'area' = the gt dict's optional 'areas' entry, else the box area w * h. Official COCO
    annotations store the segmentation-mask area, which drives the small/medium/large
    split, so APs/APm/APl/ARs/ARm/ARl computed from boxes alone can differ slightly
    from an evaluation against the official instances json (AP, AP50, AP75, AR* over
    all areas are unaffected). To reproduce official numbers exactly, pass pycocotools'
    own `COCO(annotation_file)` to `run_coco_eval`.

The twelve summary statistics keep pycocotools' value of -1 where no ground truth
exists for the slice (e.g. no small objects); per-class APs use NaN instead.
"""

import contextlib
import copy
import io
from typing import Any, Hashable, Mapping, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from faster_rcnn_tf.evaluation import common

STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
              'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


def _category_ids(num_classes: int, category_ids: Optional[Sequence[int]]) -> list:
  if category_ids is None:
    return list(range(1, num_classes + 1))
  ids = [int(c) for c in category_ids]
  if len(ids) != num_classes:
    raise ValueError(f'{len(ids)} category ids for {num_classes} classes')
  if len(set(ids)) != len(ids):
    raise ValueError(f'category ids must be distinct, got {ids}')
  return ids


def build_coco_ground_truth(gt: Mapping[Hashable, Mapping[str, Any]],
                            class_names: Sequence[str],
                            category_ids: Optional[Sequence[int]] = None,
                            image_sizes: Optional[Mapping[Hashable, Sequence[int]]] = None
                            ) -> dict:
  """A COCO-format ground-truth dataset (a JSON-able dict) from a gt dict.

  Args:
    gt: image_id (int) -> {'boxes' [N, 4] yxyx, 'classes' [N] 1..K, 'difficult' [N]
      optional, 'areas' [N] optional}, original-image pixels.
    class_names: K names; class k is class_names[k - 1].
    category_ids: K COCO category ids (class k -> category_ids[k - 1]); default 1..K.
      (COCO's 80 classes use the non-contiguous ids 1..90.)
    image_sizes: optional image_id -> (height, width).
  Returns:
    {'images': [...], 'annotations': [...], 'categories': [...]}; annotation ids are
    1..G in gt order.
  """
  num_classes = len(class_names)
  cat_ids = _category_ids(num_classes, category_ids)
  image_keys, _, obj_img, obj_cls, obj_boxes, obj_difficult = (
      common.normalize_ground_truth(gt, num_classes))
  images = []
  for key in image_keys:
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
      raise ValueError(f'COCO evaluation needs integer image ids, got {key!r}')
    image = {'id': int(key)}
    if image_sizes is not None:
      if key not in image_sizes:
        raise ValueError(f'image_sizes has no entry for image {key!r}')
      height, width = image_sizes[key]
      image.update(height=int(height), width=int(width))
    images.append(image)
  areas = []
  for key in image_keys:
    entry = gt[key]
    n = np.asarray(entry['boxes']).reshape(-1, 4).shape[0]
    if entry.get('areas') is not None:
      a = np.asarray(entry['areas'], np.float64).reshape(-1)
      if a.shape[0] != n:
        raise ValueError(f'ground truth of image {key!r}: {n} boxes but {a.shape[0]} areas')
      areas.append(a)
    else:
      areas.append(np.full(n, np.nan))
  areas = np.concatenate(areas) if areas else np.zeros(0)
  xywh = np.stack([obj_boxes[:, 1], obj_boxes[:, 0], obj_boxes[:, 3] - obj_boxes[:, 1],
                   obj_boxes[:, 2] - obj_boxes[:, 0]], axis=1)
  annotations = []
  for g in range(obj_cls.shape[0]):
    bbox = [float(v) for v in xywh[g]]
    area = float(areas[g]) if np.isfinite(areas[g]) else max(bbox[2], 0.0) * max(bbox[3], 0.0)
    annotations.append({
        'id': g + 1, 'image_id': int(image_keys[obj_img[g]]),
        'category_id': cat_ids[obj_cls[g] - 1], 'bbox': bbox, 'area': area,
        'iscrowd': int(obj_difficult[g])})
  categories = [{'id': c, 'name': str(n)} for c, n in zip(cat_ids, class_names)]
  return {'images': images, 'annotations': annotations, 'categories': categories}


def coco_api(dataset: Mapping[str, Any]) -> COCO:
  """A pycocotools `COCO` object over an in-memory dataset dict, without its printing."""
  coco = COCO()
  coco.dataset = copy.deepcopy(dict(dataset))
  with contextlib.redirect_stdout(io.StringIO()):
    coco.createIndex()
  return coco


def run_coco_eval(coco_gt: COCO, results: Sequence[Mapping[str, Any]],
                  category_ids: Optional[Sequence[int]] = None) -> dict:
  """Runs COCOeval (iouType 'bbox', default parameters) on COCO-format results.

  Args:
    coco_gt: ground truth as a pycocotools `COCO` (e.g. `coco_api(build_coco_ground_truth(...))`
      or `COCO('instances_val2017.json')`).
    results: list of {'image_id', 'category_id', 'bbox' [x, y, w, h], 'score'} (not
      modified). Validate untrusted files with `detections_io.read_coco_results`.
    category_ids: the order of the per-class outputs; default sorted(coco_gt.getCatIds()).
  Returns a dict:
    'stats':     {name: float} for the 12 names in STAT_NAMES (-1 where undefined).
    'per_class': {'AP': float64 [K], 'AP50': [K], 'AP75': [K]} (area 'all', 100 dets;
                 NaN for a category without ground truth), in `category_ids` order.
    'category_ids': list of K ints.
    'summary':   the text pycocotools prints for summarize().
    'log':       everything pycocotools printed (evaluate/accumulate/summarize).
    'coco_eval': the COCOeval object (its .eval holds precision/recall/scores).
  """
  gt_cat_ids = sorted(coco_gt.getCatIds())
  cat_ids = gt_cat_ids if category_ids is None else [int(c) for c in category_ids]
  unknown = set(cat_ids) - set(gt_cat_ids)
  if unknown:
    raise ValueError(f'category ids {sorted(unknown)} are not in the ground truth')
  gt_images = set(coco_gt.getImgIds())
  for i, r in enumerate(results):
    if r['image_id'] not in gt_images:
      raise ValueError(f'result {i}: image_id {r["image_id"]!r} is not in the ground truth')
  log = io.StringIO()
  with contextlib.redirect_stdout(log):
    if results:
      coco_dt = coco_gt.loadRes([dict(r) for r in results])
    else:  # loadRes cannot take an empty list.
      coco_dt = coco_api({'images': list(coco_gt.dataset['images']),
                          'categories': copy.deepcopy(coco_gt.dataset['categories']),
                          'annotations': []})
    coco_eval = COCOeval(coco_gt, coco_dt, iouType='bbox')
    coco_eval.evaluate()
    coco_eval.accumulate()
  summary = io.StringIO()
  with contextlib.redirect_stdout(summary):
    coco_eval.summarize()
  log.write(summary.getvalue())
  stats = {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats)}

  precision = coco_eval.eval['precision']  # [T iou, R recall, K cat, A area, M maxdets]
  iou_thrs = coco_eval.params.iouThrs
  eval_cats = list(coco_eval.params.catIds)
  per_class = {name: np.full(len(cat_ids), np.nan) for name in ('AP', 'AP50', 'AP75')}
  t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
  t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
  for k, cat in enumerate(cat_ids):
    p = precision[:, :, eval_cats.index(cat), 0, -1]
    for name, sl in (('AP', p), ('AP50', p[t50]), ('AP75', p[t75])):
      valid = sl[sl > -1]
      if valid.size:
        per_class[name][k] = float(valid.mean())
  return {'stats': stats, 'per_class': per_class, 'category_ids': cat_ids,
          'summary': summary.getvalue(), 'log': log.getvalue(), 'coco_eval': coco_eval}


def evaluate_coco(gt: Mapping[Hashable, Mapping[str, Any]], detections: Any,
                  class_names: Sequence[str], category_ids: Optional[Sequence[int]] = None,
                  image_sizes: Optional[Mapping[Hashable, Sequence[int]]] = None) -> dict:
  """COCO box metrics of detections against a gt dict (see `run_coco_eval` for the result).

  Args:
    gt: the gt dict (integer image ids), original-image pixels.
    detections: anything `common.as_detections` accepts; boxes yxyx in original-image
      pixels (an inverted box is treated as empty), classes 1..K. Detections on images
      missing from gt raise ValueError.
    class_names: K names.
    category_ids: K COCO category ids (default 1..K).
    image_sizes: optional image_id -> (height, width), stored in the COCO images.
  Returns:
    `run_coco_eval`'s dict, plus 'class_names' and 'num_gt' (int64 [K], all objects,
    difficult/crowd included) and 'num_det' (int64 [K]).
  """
  num_classes = len(class_names)
  cat_ids = _category_ids(num_classes, category_ids)
  dataset = build_coco_ground_truth(gt, class_names, cat_ids, image_sizes)
  dets = common.as_detections(detections)
  known = {img['id'] for img in dataset['images']}
  for d, key in enumerate(dets.image_ids.tolist()):
    if key not in known:
      raise ValueError(f'detection {d}: image_id {key!r} is not in the ground truth')
  if dets.classes.size and (dets.classes.min() < 1 or dets.classes.max() > num_classes):
    bad = int(np.argmax((dets.classes < 1) | (dets.classes > num_classes)))
    raise ValueError(f'detection {bad}: class {int(dets.classes[bad])} is outside '
                     f'1..{num_classes}')
  b = dets.boxes  # inverted boxes become empty (w or h = 0), as in the VOC IoU
  xywh = np.stack([b[:, 1], b[:, 0], np.maximum(b[:, 3] - b[:, 1], 0.0),
                   np.maximum(b[:, 2] - b[:, 0], 0.0)], axis=1)
  results = [{'image_id': int(i), 'category_id': cat_ids[c - 1],
              'bbox': [float(v) for v in box], 'score': float(s)}
             for i, c, box, s in zip(dets.image_ids.tolist(), dets.classes.tolist(),
                                     xywh, dets.scores.tolist())]
  out = run_coco_eval(coco_api(dataset), results, cat_ids)
  class_of = {c: k + 1 for k, c in enumerate(cat_ids)}
  obj_cls = np.array([class_of[a['category_id']] for a in dataset['annotations']], np.int64)
  out['class_names'] = list(class_names)
  out['num_gt'] = np.bincount(obj_cls, minlength=num_classes + 1)[1:].astype(np.int64)
  out['num_det'] = np.bincount(dets.classes, minlength=num_classes + 1)[1:].astype(np.int64)
  return out
