"""ops.nms.batched_nms against a plain-python greedy NMS (float64) and TF's kernel."""

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.ops import nms


def _np_greedy_nms(boxes, scores, max_output, iou_threshold, score_threshold):
  """The textbook loop: visit boxes by descending score, keep one unless a kept box
  overlaps it by IoU > iou_threshold; boxes scoring <= score_threshold never count."""
  b = boxes.astype(np.float64)
  area = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
  kept = []
  for j in np.argsort(-scores, kind='stable'):
    if scores[j] <= score_threshold or len(kept) == max_output:
      continue
    ok = True
    for i in kept:
      ih = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])
      iw = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])
      inter = max(ih, 0) * max(iw, 0)
      union = area[i] + area[j] - inter
      if union > 0 and inter / union > iou_threshold:
        ok = False
        break
    if ok:
      kept.append(int(j))
  return kept


def _clustered_boxes(rng, n, clusters=5):
  """Boxes around a few centres (long suppression chains), some of zero area."""
  centres = rng.uniform(20, 180, size=(clusters, 2))
  c = centres[rng.integers(clusters, size=n)] + rng.normal(0, 6, size=(n, 2))
  hw = rng.uniform(4, 50, size=(n, 2))
  hw[rng.uniform(size=n) < 0.05] = 0.0  # degenerate boxes
  return np.concatenate([c - hw / 2, c + hw / 2], axis=1).astype(np.float32)


@pytest.mark.parametrize('iou_threshold,score_threshold,max_output', [
    (0.3, 0.05, 40), (0.5, float('-inf'), 100), (0.7, 0.5, 7), (0.0, 0.0, 300)])
def test_matches_the_greedy_loop(iou_threshold, score_threshold, max_output):
  rng = np.random.default_rng(int(iou_threshold * 10) + max_output)
  sets, n = 6, 120
  boxes = np.stack([_clustered_boxes(rng, n) for _ in range(sets)])
  scores = rng.uniform(size=(sets, n)).astype(np.float32)
  scores[0] = 0.0  # a set with nothing above the threshold (for thresholds >= 0)
  idx, num = nms.batched_nms(tf.constant(boxes), tf.constant(scores), max_output,
                             iou_threshold, score_threshold)
  idx, num = idx.numpy(), num.numpy()
  assert idx.shape == (sets, max_output) and num.shape == (sets,)
  for s in range(sets):
    want = _np_greedy_nms(boxes[s], scores[s], max_output, iou_threshold, score_threshold)
    assert num[s] == len(want)
    assert idx[s, :num[s]].tolist() == want
    assert not idx[s, num[s]:].any()  # zero padding


def test_agrees_with_tensorflows_kernel_and_compiles_with_xla():
  rng = np.random.default_rng(7)
  boxes = np.stack([_clustered_boxes(rng, 300) for _ in range(4)])
  scores = rng.uniform(size=(4, 300)).astype(np.float32)
  run = tf.function(lambda b, s: nms.batched_nms(b, s, 100, 0.3, 0.05), jit_compile=True)
  idx, num = run(tf.constant(boxes), tf.constant(scores))
  for s in range(4):
    want = tf.image.non_max_suppression(boxes[s], scores[s], 100, 0.3, 0.05).numpy()
    assert idx.numpy()[s, :num.numpy()[s]].tolist() == want.tolist()


def test_max_output_above_the_box_count_is_padded():
  boxes = tf.constant([[[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]]], tf.float32)
  scores = tf.constant([[0.9, 0.8, 0.7]])
  idx, num = nms.batched_nms(boxes, scores, 5, 0.5)
  assert idx.numpy().tolist() == [[0, 2, 0, 0, 0]] and num.numpy().tolist() == [2]


def test_unknown_box_count_is_refused():
  fn = tf.function(lambda b, s: nms.batched_nms(b, s, 5, 0.5),
                   input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None])])
  with pytest.raises(ValueError, match='static number of boxes'):
    fn.get_concrete_function()
