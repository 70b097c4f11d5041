"""TensorFlow's padded NonMaxSuppressionV4, and a form of it that gives the same indices
under TFLite's builtin NON_MAX_SUPPRESSION_V4.

Both kernels run the greedy NMS, and give the same indices for boxes of positive area
(checked against a numpy greedy NMS). They part on boxes of zero area (a proposal clipped
to a line at the image border, common on letterboxed or very wide images): TensorFlow
gives such a box IoU 0 with everything, so it is kept at its score's rank and suppresses
nothing; TFLite's kernel puts a selected box back into its queue and counts on the box's
IoU with itself to drop it the next time, which a zero-area box never reaches, so the box
is selected again and again until the output is full.

`padded_nms` inside `zero_area_split()` (the portable exports trace the model in it) runs
the kernel on the boxes of positive area only and merges the zero-area candidates back in
by score, which is what TensorFlow's kernel computes, with any kernel. Outside it, it is
TensorFlow's kernel, as before.
"""

import contextlib
import threading

import tensorflow as tf

_STATE = threading.local()  # .zero_area_split: see zero_area_split


@contextlib.contextmanager
def zero_area_split():
  """Within it (per thread, nests), `padded_nms` traces its zero-area-safe form."""
  previous = getattr(_STATE, 'zero_area_split', False)
  _STATE.zero_area_split = True
  try:
    yield
  finally:
    _STATE.zero_area_split = previous


def padded_nms(boxes, scores, max_output_size, iou_threshold, score_threshold):
  """Greedy NMS of one box set with a static output size.

  Args:
    boxes: float32 [N, 4] yxyx (either corner order); scores: float32 [N].
    max_output_size: static int M.
    iou_threshold, score_threshold: floats; only boxes scoring above score_threshold
      are candidates.
  Returns:
    (indices int32 [M] into N by descending score, 0 past num_valid; num_valid int32 []).
  """
  if not getattr(_STATE, 'zero_area_split', False):
    return tf.raw_ops.NonMaxSuppressionV4(
        boxes=boxes, scores=scores, max_output_size=max_output_size,
        iou_threshold=iou_threshold, score_threshold=score_threshold,
        pad_to_max_output_size=True)
  return _zero_area_split_nms(boxes, scores, max_output_size, iou_threshold,
                              score_threshold)


def _zero_area_split_nms(boxes, scores, max_output_size, iou_threshold, score_threshold):
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  scores = tf.convert_to_tensor(scores, tf.float32)
  n = scores.shape[0]
  if n is None:
    raise ValueError('padded_nms: the zero-area-safe form needs a static number of boxes')
  m = int(max_output_size)
  height = tf.abs(boxes[:, 2] - boxes[:, 0])
  width = tf.abs(boxes[:, 3] - boxes[:, 1])
  zero_area = height * width <= 0.0
  candidate = scores > score_threshold
  # -inf is above no threshold: the kernel never sees the zero-area boxes.
  positive_scores = tf.where(zero_area, float('-inf'), scores)
  kept, num_kept = tf.raw_ops.NonMaxSuppressionV4(
      boxes=boxes, scores=positive_scores, max_output_size=min(m, n),
      iou_threshold=iou_threshold, score_threshold=score_threshold,
      pad_to_max_output_size=True)
  valid = tf.cast(tf.range(min(m, n)) < num_kept, tf.int32)
  selected = tf.scatter_nd(kept[:, tf.newaxis], valid, [n]) > 0
  selected = selected | (zero_area & candidate)
  # Selected boxes in score order (ties: lower index first).
  key = tf.where(selected, scores, float('-inf'))
  _, order = tf.math.top_k(key, k=min(m, n), sorted=True)
  num_valid = tf.minimum(tf.reduce_sum(tf.cast(selected, tf.int32)), m)
  indices = tf.where(tf.range(min(m, n)) < num_valid, order, 0)
  if m > n:
    indices = tf.pad(indices, [[0, m - n]])
  return indices, num_valid
