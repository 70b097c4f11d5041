"""Shared data structures for the evaluation package (numpy only, no TensorFlow).

Conventions (the project's, see `faster_rcnn_tf.ops.box_ops` and `faster_rcnn_tf.inputs`):

  * Boxes are [ymin, xmin, ymax, xmax] in continuous pixel coordinates of the ORIGINAL
    image (not the resized one the model sees); width = xmax - xmin, no "+1".
  * Classes are ints 1..K (0 is background and never appears in ground truth or
    detections); per-class arrays are indexed by class - 1.

Ground truth ("gt dict"): a mapping image_id -> per-image dict

    'boxes'      float [N, 4]  yxyx, original-image pixels
    'classes'    int   [N]     1..K
    'difficult'  bool  [N]     optional (all False when missing)
    'areas'      float [N]     optional; only the COCO evaluation uses it (see coco_metrics)

Image ids are any hashable (ints for datasets in this project; COCO needs ints).
An image with no objects has N = 0 and still counts (its detections are false positives).

Detections: a `Detections` (parallel arrays), or anything `as_detections` accepts:
a sequence of (image_id, class_id, score, box_yxyx) tuples, or a mapping with keys
'image_ids', 'classes', 'scores', 'boxes'.
"""

import dataclasses
from typing import Any, Hashable, Mapping

import numpy as np

from faster_rcnn_tf import inputs


@dataclasses.dataclass(frozen=True)
class Detections:
  """Detections of a whole split as parallel arrays (D detections); len() is D.

  image_ids: [D] array (int64 for integer ids, otherwise object/str).
  classes:   int64 [D], 1..K.
  scores:    float64 [D], finite.
  boxes:     float64 [D, 4], yxyx in original-image pixels, finite.
  """
  image_ids: np.ndarray
  classes: np.ndarray
  scores: np.ndarray
  boxes: np.ndarray

  def __len__(self):
    return int(self.scores.shape[0])


def as_detections(detections: Any) -> Detections:
  """Normalizes detections to a validated `Detections` (float64 boxes/scores, int64 classes).

  Accepts a `Detections`, a mapping with keys 'image_ids', 'classes', 'scores', 'boxes',
  or a sequence of (image_id, class_id, score, box) tuples (an empty sequence is fine).
  Raises ValueError on inconsistent lengths, a box that is not 4 numbers, or a
  non-finite score / box coordinate.
  """
  if isinstance(detections, Detections):
    image_ids, classes, scores, boxes = (detections.image_ids, detections.classes,
                                         detections.scores, detections.boxes)
  elif isinstance(detections, Mapping):
    missing = {'image_ids', 'classes', 'scores', 'boxes'} - set(detections)
    if missing:
      raise ValueError(f'detections mapping lacks keys {sorted(missing)}')
    image_ids = detections['image_ids']
    classes = detections['classes']
    scores = detections['scores']
    boxes = detections['boxes']
  else:
    rows = list(detections)
    for i, row in enumerate(rows):
      if len(row) != 4:
        raise ValueError(f'detection {i}: expected (image_id, class_id, score, box), '
                         f'got {len(row)} fields')
    image_ids = [r[0] for r in rows]
    classes = [r[1] for r in rows]
    scores = [r[2] for r in rows]
    boxes = [np.asarray(r[3], dtype=np.float64).reshape(-1) for r in rows]
    for i, b in enumerate(boxes):
      if b.shape != (4,):
        raise ValueError(f'detection {i}: box must have 4 numbers, got {b.shape[0]}')
    boxes = np.stack(boxes) if boxes else np.zeros((0, 4))

  image_ids = _id_array(image_ids)
  classes = np.asarray(classes)
  if classes.size and not np.issubdtype(classes.dtype, np.integer):
    if not np.all(np.equal(np.mod(classes, 1), 0)):
      raise ValueError('detection classes must be integers')
  classes = classes.astype(np.int64).reshape(-1)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  boxes = np.asarray(boxes, dtype=np.float64)
  if boxes.size == 0:
    boxes = boxes.reshape(0, 4)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError(f'detection boxes must be [D, 4], got shape {boxes.shape}')
  n = len(image_ids)
  if not (classes.shape[0] == scores.shape[0] == boxes.shape[0] == n):
    raise ValueError(f'detections have inconsistent lengths: image_ids {n}, classes '
                     f'{classes.shape[0]}, scores {scores.shape[0]}, boxes {boxes.shape[0]}')
  bad = ~np.isfinite(scores)
  if bad.any():
    raise ValueError(f'detection {int(np.argmax(bad))}: score is not finite')
  bad = ~np.isfinite(boxes).all(axis=1)
  if bad.any():
    raise ValueError(f'detection {int(np.argmax(bad))}: box has a non-finite coordinate')
  return Detections(image_ids, classes, scores, boxes)


def concat_detections(parts) -> Detections:
  """Concatenates several detection collections (anything `as_detections` accepts)."""
  parts = [as_detections(p) for p in parts]
  if not parts:
    return as_detections([])
  ids = [i for p in parts for i in p.image_ids.tolist()]
  return Detections(_id_array(ids),
                    np.concatenate([p.classes for p in parts]),
                    np.concatenate([p.scores for p in parts]),
                    np.concatenate([p.boxes for p in parts]))


def _id_array(ids) -> np.ndarray:
  """Image ids as an int64 array when they are all integers, else a 1-D object array."""
  if isinstance(ids, np.ndarray) and ids.dtype.kind in 'iu':
    return ids.reshape(-1).astype(np.int64)
  values = np.asarray(ids).reshape(-1).tolist() if isinstance(ids, np.ndarray) else list(ids)
  if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                    for v in values):
    return np.asarray(values, dtype=np.int64)
  if not values:
    return np.zeros(0, np.int64)
  out = np.empty(len(values), dtype=object)
  for i, v in enumerate(values):
    out[i] = v
  return out


def normalize_ground_truth(gt: Mapping[Hashable, Mapping[str, Any]], num_classes: int):
  """Validates a gt dict and returns flat arrays over all objects of all images.

  Returns:
    image_keys: list of the image ids, in the gt dict's order.
    image_index: {image_id: position in image_keys}.
    obj_image: int64 [G] position of each object's image.
    obj_class: int64 [G] 1..K.
    obj_boxes: float64 [G, 4] yxyx.
    obj_difficult: bool [G].
  Raises ValueError naming the image for a malformed entry or a class outside 1..K.
  """
  image_keys = list(gt.keys())
  image_index = {k: i for i, k in enumerate(image_keys)}
  imgs, clss, bxs, difs = [], [], [], []
  for i, key in enumerate(image_keys):
    entry = gt[key]
    boxes = np.asarray(entry['boxes'], dtype=np.float64)
    if boxes.size == 0:
      boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
      raise ValueError(f'ground truth of image {key!r}: boxes must be [N, 4], got {boxes.shape}')
    n = boxes.shape[0]
    classes = np.asarray(entry['classes']).reshape(-1).astype(np.int64)
    difficult = entry.get('difficult')
    difficult = (np.zeros(n, bool) if difficult is None
                 else np.asarray(difficult).reshape(-1).astype(bool))
    if classes.shape[0] != n or difficult.shape[0] != n:
      raise ValueError(f'ground truth of image {key!r}: {n} boxes but {classes.shape[0]} '
                       f'classes and {difficult.shape[0]} difficult flags')
    if n and (classes.min() < 1 or classes.max() > num_classes):
      raise ValueError(f'ground truth of image {key!r}: class ids must be in 1..{num_classes}, '
                       f'got {sorted(set(classes.tolist()))}')
    if not np.isfinite(boxes).all():
      raise ValueError(f'ground truth of image {key!r}: non-finite box coordinate')
    imgs.append(np.full(n, i, np.int64))
    clss.append(classes)
    bxs.append(boxes)
    difs.append(difficult)
  if imgs:
    return (image_keys, image_index, np.concatenate(imgs), np.concatenate(clss),
            np.concatenate(bxs), np.concatenate(difs))
  return (image_keys, image_index, np.zeros(0, np.int64), np.zeros(0, np.int64),
          np.zeros((0, 4)), np.zeros(0, bool))


def image_positions(image_ids: np.ndarray, image_index: Mapping[Hashable, int]) -> np.ndarray:
  """Maps detection image ids to positions in the gt dict; ValueError for an unknown id."""
  out = np.empty(len(image_ids), np.int64)
  for d, key in enumerate(image_ids.tolist()):
    try:
      out[d] = image_index[key]
    except KeyError:
      raise ValueError(f'detection {d}: image_id {key!r} is not in the ground truth') from None
  return out


def _area(boxes: np.ndarray) -> np.ndarray:
  return np.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)


def paired_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
  """IoU of row i of boxes1 with row i of boxes2 (both float [P, 4] yxyx) -> float64 [P].

  Continuous coordinates (no +1); inverted boxes have area 0; a zero union gives 0.
  """
  ymin = np.maximum(boxes1[:, 0], boxes2[:, 0])
  xmin = np.maximum(boxes1[:, 1], boxes2[:, 1])
  ymax = np.minimum(boxes1[:, 2], boxes2[:, 2])
  xmax = np.minimum(boxes1[:, 3], boxes2[:, 3])
  inter = np.maximum(ymax - ymin, 0.0) * np.maximum(xmax - xmin, 0.0)
  union = _area(boxes1) + _area(boxes2) - inter
  safe = np.where(union > 0, union, 1.0)
  return np.where(union > 0, inter / safe, 0.0)


def ground_truth_from_records(records) -> dict:
  """Builds a gt dict from records (see `faster_rcnn_tf.inputs`), numpy or eager tensors.

  Uses 'image_id', 'boxes', 'classes', 'difficult' (original-image pixels already).
  A repeated image_id raises ValueError.
  """
  gt = {}
  for rec in records:
    key = python_scalar(rec['image_id'])
    if key in gt:
      raise ValueError(f'image_id {key!r} appears twice in the records')
    gt[key] = {'boxes': np.asarray(rec['boxes'], np.float64).reshape(-1, 4),
               'classes': np.asarray(rec['classes']).reshape(-1).astype(np.int64),
               'difficult': np.asarray(rec['difficult']).reshape(-1).astype(bool)}
  return gt


def ground_truth_from_batch(batch: Mapping[str, Any], gt: dict = None) -> dict:
  """Adds the ground truth of a padded batch (see `faster_rcnn_tf.inputs`) to a gt dict.

  Batch boxes are in resized-image pixels; they are divided by the batch's 'scales' to get
  back to original-image pixels (float32 round-off of ~1e-5 pixel is expected). Padding
  rows (gt_classes == 0) are dropped. Returns the (new or updated) gt dict.
  """
  gt = {} if gt is None else gt
  boxes = np.asarray(batch[inputs.GT_BOXES], np.float64)
  classes = np.asarray(batch[inputs.GT_CLASSES]).astype(np.int64)
  difficult = np.asarray(batch[inputs.GT_DIFFICULT]).astype(bool)
  scales = np.asarray(batch[inputs.SCALES], np.float64).reshape(-1)
  image_ids = np.asarray(batch[inputs.IMAGE_IDS]).reshape(-1)
  for b in range(image_ids.shape[0]):
    key = python_scalar(image_ids[b])
    if key in gt:
      raise ValueError(f'image_id {key!r} appears twice in the ground truth')
    valid = classes[b] > 0
    gt[key] = {'boxes': boxes[b][valid] / scales[b],
               'classes': classes[b][valid],
               'difficult': difficult[b][valid]}
  return gt


def python_scalar(value):
  """A numpy / tensor scalar as a plain Python value (bytes decoded to str)."""
  value = np.asarray(value)
  if value.ndim:
    value = value.reshape(-1)[0]
  value = value.item()
  if isinstance(value, bytes):
    value = value.decode('utf-8')
  return value
