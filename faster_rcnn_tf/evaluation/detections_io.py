"""Detections <-> COCO results files, and model outputs -> detections (numpy only).

COCO results format: a JSON list of
    {"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}
with bbox in ORIGINAL-image pixels, 0-based continuous coordinates (x = xmin, y = ymin,
w = xmax - xmin, h = ymax - ymin). Our boxes are [ymin, xmin, ymax, xmax] (see
`common`); classes 1..K map to COCO category ids through `category_ids[k - 1]`
(default: identity).

Reading and writing validate every entry; problems raise ValueError naming the file,
the entry index and the problem.
"""

import json
import math
import numbers
from typing import Any, Collection, Mapping, Optional, Sequence

import numpy as np

from faster_rcnn_tf import inputs
from faster_rcnn_tf.fileio import atomic_write_text
from faster_rcnn_tf.evaluation import common
from faster_rcnn_tf import box_scaling


def outputs_to_detections(outputs: Mapping[str, Any], image_ids, scales,
                          original_sizes=None) -> common.Detections:
  """Model outputs of one batch (resized-image pixels) -> detections in original pixels.

  Args:
    outputs: mapping with `inputs.DETECTION_BOXES` float [B, M, 4] (yxyx, resized-image
      pixels), `inputs.DETECTION_SCORES` [B, M], `inputs.DETECTION_CLASSES` int [B, M]
      (1..K, 0 = padding) and optionally `inputs.NUM_DETECTIONS` int [B]. Numpy arrays
      or eager tensors.
    image_ids: [B] the batch's image ids.
    scales: float [B], resized size / original size.
    original_sizes: optional int [B, 2] (height, width); boxes are then clipped to the
      original image.
  Returns:
    `common.Detections` with boxes divided by the scale (rows with class 0 or at index
    >= num_detections dropped).
  """
  boxes = np.asarray(outputs[inputs.DETECTION_BOXES], np.float64)
  scores = np.asarray(outputs[inputs.DETECTION_SCORES], np.float64)
  classes = np.asarray(outputs[inputs.DETECTION_CLASSES]).astype(np.int64)
  if boxes.ndim != 3 or boxes.shape[-1] != 4:
    raise ValueError(f'detection boxes must be [B, M, 4], got {boxes.shape}')
  b, m = boxes.shape[:2]
  if scores.shape != (b, m) or classes.shape != (b, m):
    raise ValueError(f'detection scores {scores.shape} / classes {classes.shape} do not '
                     f'match boxes {boxes.shape}')
  valid = classes > 0
  if outputs.get(inputs.NUM_DETECTIONS) is not None:
    num = np.asarray(outputs[inputs.NUM_DETECTIONS]).reshape(-1).astype(np.int64)
    valid &= np.arange(m)[None, :] < num[:, None]
  scales = np.asarray(scales, np.float64).reshape(-1)
  if scales.shape[0] != b or not np.all(scales > 0):
    raise ValueError(f'scales must be [B] positive numbers, got {scales}')
  boxes = box_scaling.rescale_boxes(boxes, np.stack([scales, scales], axis=1),
                                    np.ones([b, 2]), clip=False)
  if original_sizes is not None:
    sizes = np.asarray(original_sizes, np.float64).reshape(b, 2)
    limits = np.stack([sizes[:, 0], sizes[:, 1], sizes[:, 0], sizes[:, 1]], axis=1)
    boxes = np.clip(boxes, 0.0, limits[:, None, :])
  ids = [common.python_scalar(v) for v in np.asarray(image_ids).reshape(-1)]
  if len(ids) != b:
    raise ValueError(f'{len(ids)} image ids for a batch of {b}')
  rows, cols = np.nonzero(valid)
  return common.as_detections({'image_ids': [ids[r] for r in rows], 'classes': classes[rows, cols],
                               'scores': scores[rows, cols], 'boxes': boxes[rows, cols]})


def detections_to_coco_results(detections: Any,
                               category_ids: Optional[Sequence[int]] = None) -> list:
  """`common.Detections` (or anything `as_detections` accepts) -> COCO results list.

  Inverted boxes (ymax < ymin or xmax < xmin) raise ValueError (they would give a
  negative width/height).
  """
  dets = common.as_detections(detections)
  b = dets.boxes
  w = b[:, 3] - b[:, 1]
  h = b[:, 2] - b[:, 0]
  bad = (w < 0) | (h < 0)
  if bad.any():
    raise ValueError(f'detection {int(np.argmax(bad))}: inverted box {b[np.argmax(bad)].tolist()}')
  results = []
  for d, (image_id, cls, score) in enumerate(zip(dets.image_ids.tolist(), dets.classes.tolist(),
                                                 dets.scores.tolist())):
    if category_ids is not None:
      if not 1 <= cls <= len(category_ids):
        raise ValueError(f'detection {d}: class {cls} is outside 1..{len(category_ids)}')
      cat = int(category_ids[cls - 1])
    else:
      cat = int(cls)
    results.append({'image_id': image_id, 'category_id': cat,
                    'bbox': [float(b[d, 1]), float(b[d, 0]), float(w[d]), float(h[d])],
                    'score': float(score)})
  return results


def coco_results_to_detections(results: Sequence[Mapping[str, Any]],
                               category_ids: Optional[Sequence[int]] = None
                               ) -> common.Detections:
  """COCO results list -> `common.Detections` (classes 1..K via `category_ids`)."""
  class_of = None
  if category_ids is not None:
    class_of = {int(c): k + 1 for k, c in enumerate(category_ids)}
  image_ids, classes, scores, boxes = [], [], [], []
  for i, r in enumerate(results):
    cat = int(r['category_id'])
    if class_of is not None:
      if cat not in class_of:
        raise ValueError(f'result {i}: unknown category_id {cat}')
      cat = class_of[cat]
    x, y, w, h = (float(v) for v in r['bbox'])
    image_ids.append(r['image_id'])
    classes.append(cat)
    scores.append(float(r['score']))
    boxes.append([y, x, y + h, x + w])
  return common.as_detections({'image_ids': image_ids, 'classes': classes, 'scores': scores,
                               'boxes': np.asarray(boxes, np.float64).reshape(-1, 4)})


def _is_int(v) -> bool:
  return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
  return isinstance(v, (numbers.Real, np.floating, np.integer)) and not isinstance(
      v, (bool, np.bool_))


def validate_coco_results(results: Any, source: str = '<results>',
                          image_ids: Optional[Collection[int]] = None,
                          category_ids: Optional[Collection[int]] = None) -> list:
  """Checks a COCO results list; returns it normalized to plain Python types.

  Args:
    results: the decoded JSON (must be a list of objects).
    source: file name used in error messages.
    image_ids: when given, every image_id must be one of them.
    category_ids: when given, every category_id must be one of them.
  Raises:
    ValueError "<source>: entry <i>: <problem>" for: a non-object entry, missing keys,
    a non-integer / unknown image_id or category_id, a bbox that is not a list of 4
    numbers, a non-finite bbox value, a negative width or height, a non-finite or
    non-numeric score.
  """
  if not isinstance(results, list):
    raise ValueError(f'{source}: expected a JSON list of results, got {type(results).__name__}')
  image_ids = None if image_ids is None else set(image_ids)
  category_ids = None if category_ids is None else set(category_ids)
  out = []
  for i, r in enumerate(results):
    where = f'{source}: entry {i}'
    if not isinstance(r, Mapping):
      raise ValueError(f'{where}: expected an object, got {type(r).__name__}')
    missing = [k for k in ('image_id', 'category_id', 'bbox', 'score') if k not in r]
    if missing:
      raise ValueError(f'{where}: missing key(s) {missing}')
    image_id, category_id, bbox, score = r['image_id'], r['category_id'], r['bbox'], r['score']
    if not _is_int(image_id):
      raise ValueError(f'{where}: image_id must be an integer, got {image_id!r}')
    if image_ids is not None and image_id not in image_ids:
      raise ValueError(f'{where}: unknown image_id {image_id}')
    if not _is_int(category_id):
      raise ValueError(f'{where}: category_id must be an integer, got {category_id!r}')
    if category_ids is not None and category_id not in category_ids:
      raise ValueError(f'{where}: unknown category_id {category_id}')
    if isinstance(bbox, np.ndarray):
      bbox = bbox.tolist()
    if not isinstance(bbox, (list, tuple)):
      raise ValueError(f'{where}: bbox must be a list [x, y, w, h], got {type(bbox).__name__}')
    if len(bbox) != 4:
      raise ValueError(f'{where}: bbox must have 4 numbers [x, y, w, h], got {len(bbox)}')
    if not all(_is_number(v) for v in bbox):
      raise ValueError(f'{where}: bbox must contain numbers, got {bbox!r}')
    if not all(math.isfinite(v) for v in bbox):
      raise ValueError(f'{where}: bbox has a non-finite value {bbox!r}')
    if bbox[2] < 0 or bbox[3] < 0:
      raise ValueError(f'{where}: bbox has a negative width or height {bbox!r}')
    if not _is_number(score):
      raise ValueError(f'{where}: score must be a number, got {score!r}')
    if not math.isfinite(score):
      raise ValueError(f'{where}: score is not finite ({score!r})')
    out.append({'image_id': int(image_id), 'category_id': int(category_id),
                'bbox': [float(v) for v in bbox], 'score': float(score)})
  return out


def write_coco_results(path: str, results: Sequence[Mapping[str, Any]],
                       image_ids: Optional[Collection[int]] = None,
                       category_ids: Optional[Collection[int]] = None) -> None:
  """Validates (see `validate_coco_results`) and writes a COCO results JSON file.

  Written atomically (a temporary file in the same directory, then os.replace).
  """
  results = validate_coco_results(list(results), str(path), image_ids, category_ids)
  atomic_write_text(path, json.dumps(results, allow_nan=False))


def read_coco_results(path: str, image_ids: Optional[Collection[int]] = None,
                      category_ids: Optional[Collection[int]] = None) -> list:
  """Reads and validates a COCO results JSON file (errors name the file and entry)."""
  with open(path, 'r', encoding='utf-8') as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: not valid JSON ({e})') from None
  return validate_coco_results(data, str(path), image_ids, category_ids)
