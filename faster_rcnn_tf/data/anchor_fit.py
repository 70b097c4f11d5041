"""Anchors fitted to a dataset: box statistics, anchor recall, k-means with IoU distance.

Everything is measured in the resized image the model sees (shorter side min_size, longer at
most max_size; `transforms.compute_scale`), in numpy, from a source's records.

Anchor recall: the fraction of ground-truth boxes whose best anchor reaches an IoU (0.5 and
0.7). The anchor target layer labels an anchor positive at IoU >= 0.7, and a box whose best
anchor stays below that gets that one anchor as its only positive. Two measures:
  * 'centred': each anchor shape centred on the box (the IoU of the shapes alone, an upper
    bound);
  * 'grid': the anchors the model has: tiled at the backbone stride over each resized
    image, only those lying entirely inside it (the ones the anchor target layer uses).

Fitting (`fit_anchors`): the anchor set is a grid, every scale with every ratio, so the
k-means runs on that grid: each box goes to the grid anchor of highest IoU (the k-means
assignment with distance 1 - IoU), then each scale becomes the geometric mean size of its
boxes and each ratio their geometric mean height / width; repeated until nothing moves.
It starts from a free k-means with IoU distance (k = scales x ratios shapes, `kmeans_iou`)
factored into scales and ratios, and from the boxes' size and ratio quantiles; each result
is also refined towards recall (`refine_for_recall`: k-means maximizes the mean IoU, not the
fraction of boxes above 0.5 and 0.7); the candidate with the best grid recall wins.
`choose_anchors` keeps the configured anchors whenever the fit does not reach their recall
at both thresholds.
"""

import numpy as np

from faster_rcnn_tf.config import parse_auto_anchors as parse_auto
from faster_rcnn_tf.data import records as R
from faster_rcnn_tf.ops import anchors as anchor_ops

THRESHOLDS = (0.5, 0.7)


def feature_stride(backbone):
  """The backbone's feature stride in pixels (`backbones` module: 8 for tiny_s8, else 16)."""
  return 8 if backbone == 'tiny_s8' else 16


def resize_boxes(height, width, boxes, min_size, max_size):
  """(resized image size int [2], boxes float64 [G, 4] in its pixels), numpy, with the
  pipeline's arithmetic (float32 scale, sides rounded, per-axis exact factors)."""
  scale = np.float32(min(np.float32(min_size) / np.float32(min(height, width)),
                         np.float32(max_size) / np.float32(max(height, width))))
  size = np.maximum(np.round(np.array([height, width], np.float32) * scale), 1).astype(int)
  factors = size / np.array([height, width], np.float64)
  return size, np.asarray(boxes, np.float64).reshape(-1, 4) * np.tile(factors, 2)


def image_boxes(record, skip_difficult=True):
  """(height, width, boxes float64 [G, 4]) of one source record, difficult boxes left out
  when skip_difficult (as training does)."""
  boxes = np.asarray(record[R.BOXES], np.float64).reshape(-1, 4)
  if skip_difficult:
    boxes = boxes[~np.asarray(record[R.DIFFICULT], bool)]
  height, width = record[R.IMAGE].shape[:2]
  return int(height), int(width), boxes


def resize_all(images, min_sizes, max_size):
  """`image_boxes` tuples at each training size: list of (size int [2], boxes float64
  [G, 4] yxyx in the resized image), one per image and size (multi-scale training: every
  listed size)."""
  return [resize_boxes(h, w, boxes, min_size, max_size)
          for h, w, boxes in images for min_size in min_sizes]


def resized_boxes(source, min_sizes, max_size, skip_difficult=True, max_images=None):
  """`resize_all` of a source's records (at most max_images of them; None: all)."""
  images = []
  for record in source.records():
    if max_images and len(images) >= max_images:
      break
    images.append(image_boxes(record, skip_difficult))
  return resize_all(images, min_sizes, max_size)


def box_shapes(resized):
  """float64 [N, 2] (height, width) of every box of `resized_boxes`' list."""
  rows = [b[:, 2:] - b[:, :2] for _, b in resized if len(b)]
  return np.concatenate(rows) if rows else np.zeros((0, 2))


def box_statistics(shapes):
  """Percentiles (5, 25, 50, 75, 95) of box size sqrt(h * w), height, width and aspect
  ratio h / w (the anchor ratio convention), plus the count; values rounded."""
  if not len(shapes):
    return {'boxes': 0}
  q = (5, 25, 50, 75, 95)

  def pct(values, digits):
    return {f'p{p}': round(float(v), digits) for p, v in zip(q, np.percentile(values, q))}

  h, w = shapes[:, 0], shapes[:, 1]
  return {'boxes': int(len(shapes)), 'size': pct(np.sqrt(h * w), 1), 'height': pct(h, 1),
          'width': pct(w, 1), 'ratio': pct(h / w, 3)}


def shape_iou(a, b):
  """IoU of boxes sharing a centre: a [N, 2], b [M, 2] (height, width) -> [N, M]."""
  a = np.asarray(a, np.float64)[:, None, :]
  b = np.asarray(b, np.float64)[None, :, :]
  inter = np.minimum(a[..., 0], b[..., 0]) * np.minimum(a[..., 1], b[..., 1])
  return inter / (a[..., 0] * a[..., 1] + b[..., 0] * b[..., 1] - inter)


def anchor_shapes(base_size, scales, ratios):
  """float64 [A, 2] (height, width) of the model's anchors (`generate_base_anchors`)."""
  base = anchor_ops.generate_base_anchors(base_size, ratios, scales).astype(np.float64)
  return base[:, 2:] - base[:, :2]


def box_iou(boxes, anchors):
  """IoU of yxyx boxes [G, 4] with anchors [N, 4] -> [G, N]."""
  b = boxes[:, None, :]
  a = anchors[None, :, :]
  ih = np.clip(np.minimum(b[..., 2], a[..., 2]) - np.maximum(b[..., 0], a[..., 0]), 0, None)
  iw = np.clip(np.minimum(b[..., 3], a[..., 3]) - np.maximum(b[..., 1], a[..., 1]), 0, None)
  inter = ih * iw
  area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
  return inter / (area_b + area_a - inter)


def best_grid_iou(resized, base_size, scales, ratios, stride):
  """float64 [N]: each box's best IoU with the anchors inside its image (the model's grid:
  base anchors shifted by stride * (row, column) over ceil(size / stride) cells)."""
  base = anchor_ops.generate_base_anchors(base_size, ratios, scales).astype(np.float64)
  best = []
  cache = {}
  for size, boxes in resized:
    if not len(boxes):
      continue
    key = (int(size[0]), int(size[1]))
    if key not in cache:
      rows, cols = -(-key[0] // stride), -(-key[1] // stride)
      ys, xs = np.meshgrid(np.arange(rows) * stride, np.arange(cols) * stride, indexing='ij')
      shifts = np.stack([ys, xs, ys, xs], axis=-1).reshape(-1, 1, 4)
      grid = (shifts + base[None]).reshape(-1, 4)
      inside = ((grid[:, 0] >= 0) & (grid[:, 1] >= 0) & (grid[:, 2] <= key[0])
                & (grid[:, 3] <= key[1]))
      cache[key] = grid[inside]
    anchors = cache[key]
    if not len(anchors):
      best.append(np.zeros(len(boxes)))
      continue
    best.append(box_iou(boxes, anchors).max(axis=1))
  return np.concatenate(best) if best else np.zeros(0)


def recall(best_iou, thresholds=THRESHOLDS):
  """{'0.5': fraction, '0.7': fraction} of boxes whose best IoU reaches each threshold."""
  best_iou = np.asarray(best_iou)
  return {str(t): (round(float(np.mean(best_iou >= t - 1e-12)), 4) if len(best_iou) else 0.0)
          for t in thresholds}


def anchor_report(resized, base_size, scales, ratios, stride):
  """Recall (centred and grid) and mean best IoU of one anchor set, as a dict."""
  shapes = box_shapes(resized)
  centred = shape_iou(shapes, anchor_shapes(base_size, scales, ratios)).max(axis=1) \
      if len(shapes) else np.zeros(0)
  grid = best_grid_iou(resized, base_size, scales, ratios, stride)
  return {'anchor_base_size': base_size, 'anchor_scales': [float(s) for s in scales],
          'anchor_ratios': [float(r) for r in ratios],
          'recall_centred': recall(centred), 'recall_grid': recall(grid),
          'mean_best_iou_centred': round(float(centred.mean()), 4) if len(centred) else 0.0,
          'mean_best_iou_grid': round(float(grid.mean()), 4) if len(grid) else 0.0}


def kmeans_iou(shapes, k, seed=0, iterations=100):
  """k-means of box shapes with distance 1 - IoU (boxes compared centred).

  Starts from k-means++ seeding (each next centre drawn with probability proportional to
  its squared distance to the nearest chosen one); each step assigns every box to the
  centre of highest IoU and moves each centre to the median height and width of its boxes.

  Args:
    shapes: float [N, 2] (height, width), N >= 1.
    k: number of clusters.
    seed: numpy seed of the start.
    iterations: at most this many steps (stops earlier when the assignment is stable).
  Returns:
    float64 [k, 2] centres sorted by area (fewer distinct ones when N < k: duplicated).
  """
  shapes = np.asarray(shapes, np.float64)
  rng = np.random.default_rng(seed)
  centres = [shapes[rng.integers(len(shapes))]]
  for _ in range(1, k):
    distance = 1.0 - shape_iou(shapes, np.array(centres)).max(axis=1)
    weights = distance ** 2
    total = weights.sum()
    index = rng.choice(len(shapes), p=weights / total) if total > 0 else rng.integers(
        len(shapes))
    centres.append(shapes[index])
  centres = np.array(centres)
  assignment = None
  for _ in range(iterations):
    new = shape_iou(shapes, centres).argmax(axis=1)
    if assignment is not None and np.array_equal(new, assignment):
      break
    assignment = new
    for j in range(k):
      members = shapes[assignment == j]
      if len(members):
        centres[j] = np.median(members, axis=0)
  return centres[np.argsort(centres[:, 0] * centres[:, 1])]


def _spread(values, count):
  """`count` quantiles of 1-D values at (i + 0.5) / count."""
  return np.quantile(values, (np.arange(count) + 0.5) / count)


def _grid_shapes(base_size, scales, ratios):
  """Ideal (height, width) of the scales x ratios grid, ratio-major: [R * S, 2]."""
  r = np.asarray(ratios, np.float64)[:, None]
  s = np.asarray(scales, np.float64)[None, :]
  h = base_size * s * np.sqrt(r)
  w = base_size * s / np.sqrt(r)
  return np.stack([h.ravel(), w.ravel()], axis=-1)


def fit_grid(shapes, base_size, scales, ratios, fit_scales=True, fit_ratios=True,
             iterations=100):
  """k-means with IoU distance on the scales x ratios anchor grid (module docstring).

  Args:
    shapes: float [N, 2] box (height, width).
    base_size: anchor base size (pixels).
    scales, ratios: the start; the ones not fitted stay as given.
    fit_scales, fit_ratios: which factor moves.
    iterations: at most this many steps.
  Returns:
    (scales, ratios) as float64 arrays, each sorted.
  """
  shapes = np.asarray(shapes, np.float64)
  scales = np.sort(np.asarray(scales, np.float64))
  ratios = np.sort(np.asarray(ratios, np.float64))
  log_size = np.log(np.sqrt(shapes[:, 0] * shapes[:, 1]) / base_size)
  log_ratio = np.log(shapes[:, 0] / shapes[:, 1])
  assignment = None
  for _ in range(iterations):
    new = shape_iou(shapes, _grid_shapes(base_size, scales, ratios)).argmax(axis=1)
    if assignment is not None and np.array_equal(new, assignment):
      break
    assignment = new
    ratio_index, scale_index = np.divmod(assignment, len(scales))
    if fit_scales:
      for j in range(len(scales)):
        if np.any(scale_index == j):
          scales[j] = np.exp(log_size[scale_index == j].mean())
    if fit_ratios:
      for i in range(len(ratios)):
        if np.any(ratio_index == i):
          ratios[i] = np.exp(log_ratio[ratio_index == i].mean())
    order_s, order_r = np.argsort(scales), np.argsort(ratios)
    scales, ratios = scales[order_s], ratios[order_r]
    if not (np.all(order_s == np.arange(len(scales)))
            and np.all(order_r == np.arange(len(ratios)))):
      assignment = None  # indices were renumbered
  return scales, ratios


def _centred_objective(shapes, base_size, scales, ratios):
  """Twice the recall at 0.5 plus the recall at 0.7 (centred), plus a tenth of the mean
  best IoU: a box with no anchor at 0.5 hardly trains, so covering it comes first."""
  best = shape_iou(shapes, anchor_shapes(base_size, scales, ratios)).max(axis=1)
  return (2.0 * np.mean(best >= THRESHOLDS[0]) + np.mean(best >= THRESHOLDS[1])
          + 0.1 * best.mean())


def refine_for_recall(shapes, base_size, scales, ratios, fit_scales=True, fit_ratios=True,
                      rounds=60, steps=(0.8, 0.9, 0.95, 1.05, 1.1, 1.25)):
  """Hill climbing from a k-means fit towards recall: k-means maximizes the mean IoU,
  which can leave a few boxes between two scales under IoU 0.5; this moves one scale or
  ratio at a time by a factor in `steps` while `_centred_objective` grows.

  Returns:
    (scales, ratios) float64 arrays, sorted.
  """
  values = {'s': list(np.asarray(scales, np.float64)),
            'r': list(np.asarray(ratios, np.float64))}
  names = [k for k, free in (('s', fit_scales), ('r', fit_ratios)) if free]
  current = _centred_objective(shapes, base_size, values['s'], values['r'])
  for _ in range(rounds):
    best_move, best_value = None, current
    for name in names:
      for i in range(len(values[name])):
        for step in steps:
          trial = dict(values)
          trial[name] = list(values[name])
          trial[name][i] *= step
          value = _centred_objective(shapes, base_size, trial['s'], trial['r'])
          if value > best_value + 1e-12:
            best_move, best_value = trial, value
    if best_move is None:
      break
    values, current = best_move, best_value
  return np.sort(values['s']), np.sort(values['r'])


def fit_anchors(resized, base_size, stride, num_scales=3, num_ratios=3, scales=None,
                ratios=None, seed=0):
  """Anchor scales and ratios fitted to the boxes (module docstring).

  Args:
    resized: `resized_boxes`' list.
    base_size, stride: the model's anchor base size and feature stride.
    num_scales, num_ratios: how many of each to fit.
    scales, ratios: fixed values (not fitted) or None to fit them.
    seed: seed of the free k-means start.
  Returns:
    (scales tuple, ratios tuple) of floats, rounded to 3 significant digits.
  """
  shapes = box_shapes(resized)
  fixed_scales, fixed_ratios = scales is not None, ratios is not None
  n_s = len(scales) if fixed_scales else num_scales
  n_r = len(ratios) if fixed_ratios else num_ratios
  if not len(shapes):
    raise ValueError('no ground-truth boxes to fit anchors to')
  log_size = np.log(np.sqrt(shapes[:, 0] * shapes[:, 1]) / base_size)
  log_ratio = np.log(shapes[:, 0] / shapes[:, 1])
  centres = kmeans_iou(shapes, n_s * n_r, seed=seed)
  c_size = np.log(np.sqrt(centres[:, 0] * centres[:, 1]) / base_size)
  c_ratio = np.log(centres[:, 0] / centres[:, 1])
  starts = [(np.exp(_spread(c_size, n_s)), np.exp(_spread(c_ratio, n_r))),
            (np.exp(_spread(log_size, n_s)), np.exp(_spread(log_ratio, n_r)))]
  candidates = []
  for start_scales, start_ratios in starts:
    s = np.asarray(scales, np.float64) if fixed_scales else start_scales
    r = np.asarray(ratios, np.float64) if fixed_ratios else start_ratios
    s, r = fit_grid(shapes, base_size, s, r, not fixed_scales, not fixed_ratios)
    candidates.append((s, r))
    candidates.append(refine_for_recall(shapes, base_size, s, r, not fixed_scales,
                                        not fixed_ratios))
  best, best_key = None, None
  for s, r in candidates:
    s = tuple(float(f'{v:.3g}') for v in s)
    r = tuple(float(f'{v:.3g}') for v in r)
    grid = best_grid_iou(resized, base_size, s, r, stride)
    rec = recall(grid)
    key = (rec['0.5'] + rec['0.7'], float(grid.mean()))
    if best_key is None or key > best_key:
      best, best_key = (s, r), key
  return best


def _dominates(report, reference):
  """Whether report's recall is at least reference's at every threshold, both measures."""
  return all(report[m][t] >= reference[m][t]
             for m in ('recall_centred', 'recall_grid') for t in report[m])


def choose_anchors(resized, base_size, stride, scales, ratios, num_scales=3, num_ratios=3,
                   reference=None, seed=0):
  """What --anchor_scales=auto / --anchor_ratios=auto give: the fitted anchors, or the
  `reference` ((scales, ratios), e.g. the configured ones) when the fit does not reach its
  recall at 0.5 and 0.7 (centred and grid).

  Args:
    resized: `resized_boxes`' list.
    base_size, stride: anchor base size and feature stride.
    scales, ratios: fixed values, or None to fit (num_scales / num_ratios of them).
    reference: optional (scales, ratios) the choice may not fall below.
    seed: seed of the free k-means start.
  Returns:
    (scales, ratios, report dict of the chosen set with 'fitted': whether it is the fit).
  """
  fitted = fit_anchors(resized, base_size, stride, num_scales, num_ratios, scales, ratios,
                       seed=seed)
  report = anchor_report(resized, base_size, *fitted, stride)
  report['fitted'] = True
  if reference is not None:
    ref_report = anchor_report(resized, base_size, *reference, stride)
    if not _dominates(report, ref_report):
      ref_report['fitted'] = False
      return tuple(reference[0]), tuple(reference[1]), ref_report
  return fitted[0], fitted[1], report


def resolve_auto(resized, base_size, stride, scale_values, ratio_values, seed=0):
  """--anchor_scales / --anchor_ratios values (lists of strings) with 'auto' or 'auto:N'
  replaced by fitted ones (the numeric one, if any, stays fixed).

  Returns:
    (scales tuple, ratios tuple, report dict of the chosen set).
  """
  n_s = parse_auto(scale_values)
  n_r = parse_auto(ratio_values)
  scales = None if n_s else tuple(float(v) for v in scale_values)
  ratios = None if n_r else tuple(float(v) for v in ratio_values)
  if scales is not None and ratios is not None:
    return scales, ratios, anchor_report(resized, base_size, scales, ratios, stride)
  return choose_anchors(resized, base_size, stride, scales, ratios, n_s or 3, n_r or 3,
                        seed=seed)


def inspect_anchors(resized, base_size, stride, scale_values, ratio_values, seed=0):
  """The anchor part of `python -m faster_rcnn_tf.data.inspect`: box statistics in the
  resized image, the configured anchors' recall (when numeric) and 'auto''s: fitted with
  as many scales and ratios as configured, the configured ones kept if the fit falls short
  of their recall (`choose_anchors`); plus the free k-means shapes (as many as anchors)."""
  n_s = parse_auto(scale_values)
  n_r = parse_auto(ratio_values)
  shapes = box_shapes(resized)
  out = {'stride': stride, 'boxes': box_statistics(shapes), 'configured': None, 'auto': None}
  if not len(shapes):
    return out
  reference = None
  if not n_s and not n_r:
    reference = (tuple(float(v) for v in scale_values), tuple(float(v) for v in ratio_values))
    out['configured'] = anchor_report(resized, base_size, *reference, stride)
  num_scales = n_s or len(scale_values)
  num_ratios = n_r or len(ratio_values)
  _, _, out['auto'] = choose_anchors(resized, base_size, stride, None, None, num_scales,
                                     num_ratios, reference=reference, seed=seed)
  centres = kmeans_iou(shapes, num_scales * num_ratios, seed=seed)
  out['kmeans_shapes'] = [[round(float(h), 1), round(float(w), 1)] for h, w in centres]
  out['kmeans_mean_iou'] = round(float(shape_iou(shapes, centres).max(axis=1).mean()), 4)
  return out
