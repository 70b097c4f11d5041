"""Greedy non-maximum suppression for the proposal layer and the detection head.

`non_max_suppression` runs the classic greedy NMS (visit boxes by descending score; keep a
box unless a box kept before it overlaps it by IoU > iou_threshold) on each of S
independent sets of N boxes, by one of these methods:

  'kernel'  TF's NonMaxSuppressionV4 kernel, one set after another (tf.map_fn). The
            fastest on a CPU outside XLA when few boxes are kept: per candidate it
            compares only against the boxes kept so far and stops at the first overlap.
            XLA lowers it to a slow loop; TFLite has a builtin for it.
  'tiled'   Plain TF ops with static shapes, all sets at once, for XLA (CPU, GPU, TPU).
            The boxes, in score order, are cut into tiles of `tile_size`. Each tile is
            first compared with the boxes kept from the earlier tiles (held in a buffer of
            max_output_size + tile_size rows, compared chunk by chunk as far as it is
            filled), then with itself: keep[j] = candidate[j] and no kept box of the tile
            ranked before j overlaps j, iterated to its fixed point (the greedy result is
            its only fixed point, reached in as many rounds as the longest chain of
            suppressions inside the tile). The loop over tiles stops once every set has
            max_output_size boxes.
  'batched' The tiled form with one tile holding all N boxes: the IoU of all pairs at
            once ([S, N, N] memory), for small N such as the detection head's 300 RoIs.
  'auto'    Decided when traced (`resolve_method`): 'tiled' inside an XLA-compiled
            function or when TensorFlow sees a GPU or TPU; on a CPU outside XLA 'kernel'
            for small outputs and 'tiled' from `CPU_TILED_FROM` kept boxes on (the
            training proposals, 12000 -> 2000 per image, where the kernel's comparisons
            grow with the kept count; bench/README.md, "NMS methods").

All methods give the indices and counts of tf.image.non_max_suppression: a box is a
candidate when its score is strictly above score_threshold; IoU strictly above
iou_threshold suppresses; IoU is computed as TF's kernel does (corners put in order first;
0 when either box has zero area; intersection / (area_a + area_b - intersection) in
float32); boxes of equal score are visited by ascending index. (One exception: XLA's
lowering of TF's kernel, 'kernel' inside an XLA-compiled function, visits equal scores in
another order.)

TFLite's builtin NON_MAX_SUPPRESSION_V4 (what the 'kernel' method converts to) parts from
TF's kernel on boxes of zero area (a proposal clipped to a line at the image border, common
on letterboxed or very wide images): TF gives such a box IoU 0 with everything, so it is
kept at its score's rank and suppresses nothing; TFLite's kernel puts a selected box back
into its queue and counts on the box's IoU with itself to drop it the next time, which a
zero-area box never reaches, so the box is selected again and again until the output is
full. Inside `forced_method(..., split_zero_area=True)` the 'kernel' method therefore runs
the kernel on the boxes of positive area only and merges the zero-area candidates back in
by score: TF's result, under either kernel (static N only). The portable exports
(`serving.portable`) trace the model in `forced_method('kernel', split_zero_area=True)`.
"""

import contextlib
import threading

import tensorflow as tf

from faster_rcnn_tf.ops import xla_context

METHODS = ('auto', 'kernel', 'tiled', 'batched')
TILE_SIZE = 512  # boxes per tile of the 'tiled' method (bench/bench_nms.py --tile_sizes)
CPU_TILED_FROM = 1000  # 'auto' on a CPU outside XLA: 'tiled' from this max_output_size
_FORCED = threading.local()  # .method, .split_zero_area: see forced_method


@contextlib.contextmanager
def forced_method(method, split_zero_area=False):
  """Within it (per thread, nests), every NMS traced takes `method` ('kernel', 'tiled' or
  'batched'), whatever method its caller asked for; with split_zero_area, 'kernel' keeps
  the zero-area boxes out of the kernel (module docstring).

  Raises ValueError for 'auto' or an unknown method.
  """
  if method not in METHODS or method == 'auto':
    raise ValueError(f'forced_method: method must be one of {METHODS[1:]}, got {method!r}')
  previous = (getattr(_FORCED, 'method', None), getattr(_FORCED, 'split_zero_area', False))
  _FORCED.method, _FORCED.split_zero_area = method, bool(split_zero_area)
  try:
    yield
  finally:
    _FORCED.method, _FORCED.split_zero_area = previous


def resolve_method(method, accelerator_visible=None, max_output_size=None):
  """One of METHODS -> 'kernel', 'tiled' or 'batched': the `forced_method` in effect,
  else `method`, 'auto' decided as described in the module docstring (accelerator_visible
  overrides the GPU / TPU check, for tests; max_output_size: the problem's, None counting
  as small).

  Raises ValueError naming nms_method for an unknown method.
  """
  if method not in METHODS:
    raise ValueError(f'nms_method: unknown method {method!r}; choose from {METHODS}')
  forced = getattr(_FORCED, 'method', None)
  if forced:
    return forced
  if method != 'auto':
    return method
  if xla_context.in_xla_compilation(if_unknown=False):
    return 'tiled'
  if accelerator_visible is None:
    accelerator_visible = bool(tf.config.list_logical_devices('GPU')
                               or tf.config.list_logical_devices('TPU'))
  if accelerator_visible:
    return 'tiled'
  large = max_output_size is not None and max_output_size >= CPU_TILED_FROM
  return 'tiled' if large else 'kernel'


def non_max_suppression(boxes, scores, max_output_size, iou_threshold,
                        score_threshold=float('-inf'), method='auto', tile_size=TILE_SIZE,
                        presorted=False):
  """Greedy NMS of each of S sets of boxes.

  Args:
    boxes: float32 [S, N, 4] yxyx (corners in either order); N static except for
      'kernel'.
    scores: float32 [S, N].
    max_output_size: static int M, at most this many boxes per set.
    iou_threshold: float in [0, 1]; score_threshold: float (-inf: every box is a
      candidate).
    method: one of METHODS.
    tile_size: boxes per tile of 'tiled' (static int).
    presorted: the caller guarantees scores descend along N, equal scores in index order
      (tf.math.top_k's output): the tiled form skips its sort.
  Returns:
    indices int32 [S, M] into N of the kept boxes, by descending score (0 past num_valid),
    and num_valid int32 [S].
  """
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  scores = tf.convert_to_tensor(scores, tf.float32)
  max_output_size = int(max_output_size)
  method = resolve_method(method, max_output_size=max_output_size)
  if method == 'kernel':
    return _kernel(boxes, scores, max_output_size, iou_threshold, score_threshold)
  n = scores.shape[-1]
  if n is None:
    raise ValueError(f'nms_method {method!r} needs a static number of boxes per set')
  tile = n if method == 'batched' else max(1, min(int(tile_size), n))
  return _tiled(boxes, scores, max_output_size, iou_threshold, score_threshold, tile,
                presorted)


def _kernel(boxes, scores, max_output_size, iou_threshold, score_threshold):
  """TF's NonMaxSuppressionV4 per set (tf.map_fn): [S, N, 4], [S, N] -> [S, M], [S]."""
  n = boxes.shape[1]
  # XLA's lowering of the kernel wants max_output_size <= N: ask for at most N and pad.
  size = max_output_size if n is None else min(max_output_size, n)

  split = getattr(_FORCED, 'split_zero_area', False)
  if split and n is None:
    raise ValueError('nms: the zero-area split of the kernel method needs a static number '
                     'of boxes per set')

  def one_set(args):
    set_boxes, set_scores = args
    if split:
      idx, count = _kernel_zero_area_split(set_boxes, set_scores, size, iou_threshold,
                                           score_threshold)
    else:
      idx, count = tf.raw_ops.NonMaxSuppressionV4(
          boxes=set_boxes, scores=set_scores, max_output_size=size,
          iou_threshold=iou_threshold, score_threshold=score_threshold,
          pad_to_max_output_size=True)
    idx = tf.where(tf.range(size) < count, idx, 0)
    if size < max_output_size:
      idx = tf.pad(idx, [[0, max_output_size - size]])
    return idx, count

  return tf.map_fn(one_set, (boxes, scores),
                   fn_output_signature=(tf.TensorSpec([max_output_size], tf.int32),
                                        tf.TensorSpec([], tf.int32)))


def _kernel_zero_area_split(boxes, scores, size, iou_threshold, score_threshold):
  """NonMaxSuppressionV4 of one set with its zero-area boxes kept out of the kernel
  (module docstring): boxes [N, 4] (N static), scores [N], static size <= N ->
  (indices int32 [size] of the kept boxes by descending score, count int32 [])."""
  n = boxes.shape[0]
  zero_area = tf.abs(boxes[:, 2] - boxes[:, 0]) * tf.abs(boxes[:, 3] - boxes[:, 1]) <= 0.0
  candidate = scores > score_threshold
  # -inf is above no threshold: the kernel never sees the zero-area boxes.
  kept, num_kept = tf.raw_ops.NonMaxSuppressionV4(
      boxes=boxes, scores=tf.where(zero_area, float('-inf'), scores), max_output_size=size,
      iou_threshold=iou_threshold, score_threshold=score_threshold,
      pad_to_max_output_size=True)
  # The padding slots write into an extra row n, so each real row is written at most once:
  # TF's scatter adds duplicate writes, but ONNX's ScatterND keeps only the last one.
  rows = tf.where(tf.range(size) < num_kept, kept, n)
  marked = tf.scatter_nd(rows[:, tf.newaxis], tf.ones([size], tf.int32), [n + 1])[:n]
  selected = (marked > 0) | (zero_area & candidate)
  # The selected boxes in score order, equal scores by ascending index (as the kernel).
  _, order = tf.math.top_k(tf.where(selected, scores, float('-inf')), k=size, sorted=True)
  return order, tf.minimum(tf.reduce_sum(tf.cast(selected, tf.int32)), size)


def _ordered_corners(boxes):
  """[..., 4] with ymin <= ymax and xmin <= xmax (TF's kernel accepts either order)."""
  y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
  return tf.stack([tf.minimum(y1, y2), tf.minimum(x1, x2), tf.maximum(y1, y2),
                   tf.maximum(x1, x2)], axis=-1)


def _overlaps(a, b, iou_threshold):
  """bool [S, P, Q]: IoU(a[p], b[q]) > iou_threshold, IoU as TF's kernel computes it.

  a: float32 [S, P, 4], b: float32 [S, Q, 4], corners in order.
  """
  a = a[:, :, tf.newaxis]
  b = b[:, tf.newaxis]
  area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
  area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  inter_h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]),
                       0.0)
  inter_w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]),
                       0.0)
  inter = inter_h * inter_w
  iou = inter / (area_a + area_b - inter)  # NaN only where an area is 0: masked below
  return (area_a > 0.0) & (area_b > 0.0) & (iou > iou_threshold)


def _tiled(boxes, scores, max_output_size, iou_threshold, score_threshold, tile, presorted):
  """The 'tiled' method (module docstring): [S, N, 4], [S, N] -> [S, M], [S]."""
  n = scores.shape[-1]
  m = max_output_size
  num_sets = scores.shape[0] if scores.shape[0] is not None else tf.shape(scores)[0]
  if presorted:
    order = tf.broadcast_to(tf.range(n)[tf.newaxis], tf.shape(scores))
    sorted_scores, sorted_boxes = scores, boxes
  else:
    sorted_scores, order = tf.math.top_k(scores, k=n, sorted=True)  # ties: lower index first
    sorted_boxes = tf.gather(boxes, order, batch_dims=1)
  sorted_boxes = _ordered_corners(sorted_boxes)
  candidate = sorted_scores > score_threshold
  num_tiles = -(-n // tile)
  pad = num_tiles * tile - n
  if pad:
    sorted_boxes = tf.pad(sorted_boxes, [[0, 0], [0, pad], [0, 0]])
    candidate = tf.pad(candidate, [[0, 0], [0, pad]])
  # Tile-major: [num_tiles, S, tile, ...], tile t read with one gather.
  tiles_boxes = tf.transpose(tf.reshape(sorted_boxes, [num_sets, num_tiles, tile, 4]),
                             [1, 0, 2, 3])
  tiles_candidate = tf.transpose(tf.reshape(candidate, [num_sets, num_tiles, tile]), [1, 0, 2])
  # Inside a tile only a box ranked before j can suppress j.
  earlier = tf.linalg.band_part(tf.ones([tile, tile], tf.bool), 0, -1) & ~tf.eye(tile,
                                                                                  dtype=tf.bool)
  rows = m + tile  # kept boxes so far; a tile starting below m may add up to `tile`
  set_ids = tf.broadcast_to(tf.range(num_sets)[:, tf.newaxis], [num_sets, tile])

  def suppressed_by_kept(tile_boxes, kept_boxes, num_kept, active):
    """bool [S, tile]: overlaps a box kept from an earlier tile. Rows of the buffer past a
    set's count are zero boxes (zero area: never overlap), so chunks run to the largest
    count of the sets still active."""
    filled = tf.reduce_max(tf.where(active, num_kept, 0))

    def body(start, hit):
      chunk = tf.slice(kept_boxes, tf.stack([0, start, 0]), [-1, tile, 4])
      chunk.set_shape([kept_boxes.shape[0], tile, 4])  # a dynamic start hides the first
      return start + tile, hit | tf.reduce_any(_overlaps(chunk, tile_boxes, iou_threshold),
                                               axis=1)

    _, hit = tf.while_loop(lambda start, hit: start < filled, body,
                           (tf.constant(0), tf.zeros([num_sets, tile], tf.bool)),
                           maximum_iterations=-(-m // tile))
    return hit

  def self_suppression(tile_boxes, tile_candidate):
    """bool [S, tile]: the greedy keep of the tile's candidates among themselves."""
    suppresses = tf.cast(_overlaps(tile_boxes, tile_boxes, iou_threshold) & earlier,
                         tf.float32)

    def step(keep):
      hit = tf.einsum('si,sij->sj', tf.cast(keep, tf.float32), suppresses)
      return tile_candidate & (hit <= 0.0)

    keep, _ = tf.while_loop(lambda keep, previous: tf.reduce_any(keep != previous),
                            lambda keep, previous: (step(keep), keep),
                            (step(tile_candidate), tile_candidate),
                            maximum_iterations=tile)
    return keep

  def tile_body(t, num_kept, kept_boxes, kept_positions):
    tile_boxes = tf.gather(tiles_boxes, t)
    active = num_kept < m
    tile_candidate = tf.gather(tiles_candidate, t) & active[:, tf.newaxis]
    tile_candidate &= ~suppressed_by_kept(tile_boxes, kept_boxes, num_kept, active)
    keep = self_suppression(tile_boxes, tile_candidate)
    # Write the tile's kept boxes (in order) at the set's count and zero boxes after them:
    # row offset + rank, a permutation of offset .. offset + tile - 1 (no duplicates).
    keep_int = tf.cast(keep, tf.int32)
    num_new = tf.reduce_sum(keep_int, axis=1, keepdims=True)
    kept_rank = tf.cumsum(keep_int, axis=1, exclusive=True)
    dropped_rank = num_new + tf.cumsum(1 - keep_int, axis=1, exclusive=True)
    offset = tf.minimum(num_kept, m)[:, tf.newaxis]
    dest = tf.stack([set_ids, offset + tf.where(keep, kept_rank, dropped_rank)], axis=-1)
    kept_boxes = tf.tensor_scatter_nd_update(
        kept_boxes, dest, tf.where(keep[..., tf.newaxis], tile_boxes, 0.0))
    positions = t * tile + tf.range(tile)[tf.newaxis]
    kept_positions = tf.tensor_scatter_nd_update(
        kept_positions, dest, tf.where(keep, positions, 0))
    num_kept = num_kept + num_new[:, 0]
    num_kept.set_shape(keep.shape[:1])  # ops above with a dynamic index hide it
    return t + 1, num_kept, kept_boxes, kept_positions

  def more_tiles(t, num_kept, kept_boxes, kept_positions):
    del kept_boxes, kept_positions
    return (t < num_tiles) & tf.reduce_any(num_kept < m)

  _, num_kept, _, kept_positions = tf.while_loop(
      more_tiles, tile_body,
      (tf.constant(0), tf.zeros([num_sets], tf.int32), tf.zeros([num_sets, rows, 4]),
       tf.zeros([num_sets, rows], tf.int32)),
      maximum_iterations=num_tiles)
  num_valid = tf.minimum(num_kept, m)
  in_range = tf.range(m)[tf.newaxis] < num_valid[:, tf.newaxis]
  positions = tf.minimum(kept_positions[:, :m], n - 1)  # padding rows hold 0 anyway
  indices = tf.where(in_range, tf.gather(order, positions, batch_dims=1), 0)
  return indices, num_valid
