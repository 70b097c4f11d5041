"""Greedy non-maximum suppression of many small box sets at once, in plain TF ops.

`batched_nms` runs the classic greedy NMS (the highest-scoring box is kept, every box
overlapping it by IoU > iou_threshold is dropped, repeat) on each of S independent sets
of N boxes in one batched computation: the IoU of all pairs [S, N, N], then a
fixed-point iteration

    keep[j] = (score[j] > score_threshold) and no kept i ranked before j overlaps j,

which the greedy result satisfies and is the only solution of (keep[j] depends on the
earlier boxes only), and which reaches it in as many rounds as the longest chain of
"suppresses" in a set (a few, in practice; N at most).

Why: the detection head runs NMS per class per image, K * B small problems (N = 300 RoIs
each). One TF NonMaxSuppression kernel per problem, under tf.map_fn, runs them one at a
time: on a GPU the kernel launches and loop steps cost more than the work (most of a
VGG16 inference on an H100, docs/performance.md), and XLA's lowering of the kernel is
slower still. Meant for
small N: memory is S * N * N; the proposal layer's 6000-box NMS keeps TF's kernel.

Results equal tf.image.non_max_suppression's (score strictly above score_threshold, IoU
strictly above iou_threshold suppresses; pairs with a zero union have IoU 0), up to the
order of boxes with exactly equal scores.
"""

import tensorflow as tf

from faster_rcnn_tf.ops import box_ops


def batched_nms(boxes, scores, max_output_size, iou_threshold, score_threshold=float('-inf')):
  """Greedy NMS of each of S sets.

  Args:
    boxes: float32 [S, N, 4] yxyx (y1 <= y2, x1 <= x2), N static.
    scores: float32 [S, N].
    max_output_size: static int M, at most this many boxes per set.
    iou_threshold, score_threshold: floats (or float32 scalars).
  Returns:
    indices int32 [S, M] into N of the kept boxes, by descending score (0 padding past
    num_valid), and num_valid int32 [S].
  """
  scores = tf.convert_to_tensor(scores, tf.float32)
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  n = scores.shape[-1]
  if n is None:
    raise ValueError('batched_nms needs a static number of boxes per set')
  sorted_scores, order = tf.math.top_k(scores, k=n, sorted=True)  # [S, N]
  sorted_boxes = tf.gather(boxes, order, batch_dims=1)
  candidate = sorted_scores > score_threshold
  # suppresses[s, i, j]: box i ranks before box j and overlaps it too much.
  earlier = tf.linalg.band_part(tf.ones([n, n], tf.bool), 0, -1) & ~tf.eye(n, dtype=tf.bool)
  suppresses = (box_ops.iou(sorted_boxes, sorted_boxes) > iou_threshold) & earlier
  suppresses = tf.cast(suppresses, tf.float32)

  def step(keep):
    hit = tf.einsum('si,sij->sj', tf.cast(keep, tf.float32), suppresses)
    return candidate & (hit <= 0.0)

  def not_done(keep, previous):
    return tf.reduce_any(tf.not_equal(keep, previous))

  keep, _ = tf.while_loop(not_done, lambda keep, previous: (step(keep), keep),
                          (step(candidate), candidate), maximum_iterations=n)
  # The first M kept positions (already in score order) -> indices into the input.
  num_kept = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
  m = min(int(max_output_size), n)
  rank_key = tf.where(keep, n - tf.range(n)[tf.newaxis], 0)  # earlier kept: larger
  _, positions = tf.math.top_k(rank_key, k=m, sorted=True)
  num_valid = tf.minimum(num_kept, m)
  in_range = tf.range(m)[tf.newaxis] < num_valid[:, tf.newaxis]
  indices = tf.where(in_range, tf.gather(order, positions, batch_dims=1), 0)
  if m < max_output_size:
    indices = tf.pad(indices, [[0, 0], [0, int(max_output_size) - m]])
  return indices, num_valid
