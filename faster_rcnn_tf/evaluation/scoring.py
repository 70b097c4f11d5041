"""Scoring detections of a split with the metrics evaluate.py offers.

Metric names (--metric, comma-separated):
  voc07  PASCAL VOC2007 11-point AP@0.5 per class and mAP (`voc_metrics`, use_07_metric)
  voc    PASCAL VOC2010+ area AP@0.5 (the area under the precision envelope)
  coco   pycocotools COCOeval box metrics (AP@[.5:.95], AP50, AP75, APs/m/l, AR...)

Ground truth is the `run_model.SplitTruth` of the evaluated images. For `coco` on a COCO
json dataset (coco:FILE.json) the json's own annotations are used, restricted to the
evaluated images (crowd regions, annotated areas and all, so the numbers are pycocotools'
on that file); elsewhere the COCO ground truth is built from the records
(`coco_metrics.build_coco_ground_truth`: difficult objects become crowd regions, areas are
box areas).

Detections files are COCO results (`detections_io`): image_id is the dataset source's id
(see evaluate.py) and category_id the source's category id of the class
(`source.category_ids`; 1..K except for COCO json datasets).
"""

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np

from faster_rcnn_tf.evaluation import coco_metrics
from faster_rcnn_tf.evaluation import detections_io
from faster_rcnn_tf.evaluation import run_model
from faster_rcnn_tf.evaluation import voc_metrics
from faster_rcnn_tf.evaluation.errors import EvaluationError

METRICS = ('voc07', 'voc', 'coco')


def parse_metrics(values) -> tuple:
  """--metric values (a list or a comma-separated string) -> tuple of names, in order."""
  if isinstance(values, str):
    values = values.split(',')
  names = []
  for v in values or []:
    v = v.strip().lower()
    if not v:
      continue
    if v not in METRICS:
      raise EvaluationError(f'--metric: unknown metric {v!r}; choose from {", ".join(METRICS)} '
                            '(several: --metric=voc07,coco)')
    if v not in names:
      names.append(v)
  if not names:
    raise EvaluationError(f'--metric: no metric given; choose from {", ".join(METRICS)}')
  return tuple(names)


def load_detections(path, truth, category_ids, restrict_to_truth=False):
  """Reads and validates a COCO results file against the evaluated split.

  Args:
    path: the --detections file.
    truth: `run_model.SplitTruth`; every image_id must be one of its images, unless
      restrict_to_truth, which drops detections of other images (--max_eval_images).
    category_ids: the source's category ids; every category_id must be one of them.
  Returns:
    (COCO results list, common.Detections with classes 1..K).
  Raises:
    EvaluationError naming --detections, the entry and the problem.
  """
  if not os.path.isfile(path):
    raise EvaluationError(f'--detections={path}: no such file')
  try:
    results = detections_io.read_coco_results(
        path, image_ids=None if restrict_to_truth else list(truth.gt),
        category_ids=list(category_ids))
  except ValueError as e:
    raise EvaluationError(f'--detections: {e} (image ids must be the split\'s, category ids '
                          f'one of {list(category_ids)})') from None
  except OSError as e:
    raise EvaluationError(f'--detections={path}: cannot be read ({e})') from None
  except UnicodeDecodeError as e:
    raise EvaluationError(f'--detections={path}: not a text (JSON) file ({e})') from None
  if restrict_to_truth:
    results = [r for r in results if r['image_id'] in truth.gt]
  return results, detections_io.coco_results_to_detections(results, category_ids)


def coco_json_ground_truth(json_path, image_ids):
  """A pycocotools COCO over a COCO json's own annotations of `image_ids` only.

  Annotations lacking 'area' get the box area and lacking 'iscrowd' get 0 (COCOeval needs
  both); everything else is the file's.
  """
  with open(json_path, encoding='utf-8') as f:
    data = json.load(f)
  keep = set(image_ids)
  annotations = []
  for ann in data.get('annotations', []):
    if ann.get('image_id') not in keep:
      continue
    ann = dict(ann)
    if 'area' not in ann:
      _, _, w, h = (float(v) for v in ann['bbox'])
      ann['area'] = max(w, 0.0) * max(h, 0.0)
    ann.setdefault('iscrowd', 0)
    annotations.append(ann)
  dataset = {'images': [im for im in data.get('images', []) if im.get('id') in keep],
             'annotations': annotations,
             'categories': list(data.get('categories', []))}
  for key in ('info', 'licenses'):
    if key in data:
      dataset[key] = data[key]
  return coco_metrics.coco_api(dataset)


def coco_json_path(spec: str) -> Optional[str]:
  """The annotations file of a 'coco:FILE.json[:IMAGES]' dataset spec, else None."""
  kind, _, rest = spec.partition(':')
  if kind != 'coco' or not rest:
    return None
  marker = rest.lower().find('.json:')
  return rest[:marker + 5] if marker >= 0 else rest


@dataclasses.dataclass
class Scores:
  """Results of `score`: VOC results by metric name, the COCO result, PR curves."""
  voc: Dict[str, dict]
  coco: Optional[dict]
  curves: Optional[dict]   # an evaluate_voc result whose precision/recall are plotted


def _coco(truth, results, class_names, category_ids, official_json=None):
  cat_ids = list(category_ids)
  if official_json is not None:
    coco_gt = coco_json_ground_truth(official_json, list(truth.gt))
    json_cats = sorted(coco_gt.getCatIds())
    if sorted(cat_ids) != json_cats:  # a --classes subset: judge only those classes
      official_json = None
  if official_json is None:
    dataset = coco_metrics.build_coco_ground_truth(truth.gt, class_names, cat_ids,
                                                   truth.image_sizes)
    coco_gt = coco_metrics.coco_api(dataset)
  out = coco_metrics.run_coco_eval(coco_gt, results, cat_ids)
  k = len(cat_ids)
  index = {c: i for i, c in enumerate(cat_ids)}
  num_gt = np.zeros(k, np.int64)
  for ann in coco_gt.dataset['annotations']:
    if not ann.get('iscrowd', 0) and ann['category_id'] in index:
      num_gt[index[ann['category_id']]] += 1
  num_det = np.zeros(k, np.int64)
  for r in results:
    num_det[index[r['category_id']]] += 1
  out.update(class_names=list(class_names), num_gt=num_gt, num_det=num_det,
             ground_truth='annotations file' if official_json else 'records')
  return out


def score(metrics: Sequence[str], truth, detections, results, class_names, category_ids,
          coco_json: Optional[str] = None) -> Scores:
  """Computes the named metrics.

  Args:
    metrics: names from METRICS.
    truth: `run_model.SplitTruth`.
    detections: common.Detections (classes 1..K), original pixels.
    results: the same detections as COCO results (`run_model.canonical_detections`).
    class_names, category_ids: the source's.
    coco_json: the dataset's COCO annotations file when it is one (see module docstring).
  """
  voc = run_model.score_voc(truth.gt, detections, len(class_names), metrics)
  coco = _coco(truth, results, class_names, category_ids, coco_json) \
      if 'coco' in metrics else None
  curves = next(iter(voc.values()), None)
  if curves is None:  # PR curves are drawn even when no VOC metric is asked for
    curves = voc_metrics.evaluate_voc(truth.gt, detections, len(class_names))
  return Scores(voc, coco, curves)


def headline(scores: Scores) -> Dict[str, Any]:
  """{label: value} of the main number of each metric, for the console."""
  out = {}
  for name, r in scores.voc.items():
    out[f'{"VOC07 11-point" if name == "voc07" else "VOC area"} mAP@0.5'] = r['map']
  if scores.coco is not None:
    out['COCO AP@[.5:.95]'] = scores.coco['stats']['AP']
    out['COCO AP@0.5'] = scores.coco['stats']['AP50']
  return out
