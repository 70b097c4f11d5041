"""ops.nms against tf.image.non_max_suppression (TF's kernel, the reference) and a
plain-python greedy loop (float64): every method, compiled with XLA and not."""

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.ops import nms
from tests.step_helpers import graph_op_types


def _np_greedy_nms(boxes, scores, max_output, iou_threshold, score_threshold):
  """The textbook loop: visit boxes by descending score (equal scores by index), keep one
  unless a kept box overlaps it by IoU > iou_threshold; boxes scoring <= score_threshold
  never count; a box of zero area overlaps nothing."""
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
      if area[i] > 0 and area[j] > 0 and inter / union > iou_threshold:
        ok = False
        break
    if ok:
      kept.append(int(j))
  return kept


def _clustered_boxes(rng, n, clusters=5, span=200.0):
  """Boxes around a few centres (long suppression chains), some of zero area."""
  centres = rng.uniform(0.1 * span, 0.9 * span, size=(clusters, 2))
  c = centres[rng.integers(clusters, size=n)] + rng.normal(0, 0.03 * span, size=(n, 2))
  hw = rng.uniform(0.02 * span, 0.25 * span, size=(n, 2))
  hw[rng.uniform(size=n) < 0.05] = 0.0  # degenerate boxes
  return np.concatenate([c - hw / 2, c + hw / 2], axis=1).astype(np.float32)


# ---- the cases of the acceptance: each gives boxes [2, N, 4] and scores [2, N] ----

def _random(rng, n):
  """Clustered boxes over a canvas that grows with n; scores on a 1/1000 grid (ties)."""
  span = 40.0 * np.sqrt(n) + 50.0
  boxes = np.stack([_clustered_boxes(rng, n, clusters=max(1, n // 40), span=span)
                    for _ in range(2)])
  scores = np.round(rng.uniform(size=(2, n)), 3).astype(np.float32)
  return boxes, scores


def _equal_scores(rng, n):
  boxes, _ = _random(rng, n)
  return boxes, np.full((2, n), 0.5, np.float32)


def _identical_boxes(rng, n):
  """Set 0: one box n times; set 1: three distinct boxes repeated; random scores with
  ties."""
  boxes = np.zeros((2, n, 4), np.float32)
  boxes[0] = [10, 20, 50, 80]
  three = np.array([[10, 20, 50, 80], [12, 22, 52, 82], [100, 100, 140, 160]], np.float32)
  boxes[1] = three[rng.integers(3, size=n)]
  scores = np.round(rng.uniform(size=(2, n)), 2).astype(np.float32)
  return boxes, scores


def _zero_area_boxes(rng, n):
  """Random boxes, about half flattened to zero height, zero width or a point (TF's
  kernel: IoU 0 with anything, so they are never suppressed)."""
  boxes, scores = _random(rng, n)
  kind = rng.integers(4, size=(2, n))
  boxes[..., 2] = np.where((kind == 1) | (kind == 3), boxes[..., 0], boxes[..., 2])
  boxes[..., 3] = np.where((kind == 2) | (kind == 3), boxes[..., 1], boxes[..., 3])
  return boxes, scores


def _all_overlapping(rng, n):
  """Jittered copies of one box: every pair has IoU > 0.8."""
  base = np.array([100, 100, 200, 200], np.float32)
  boxes = (base + rng.uniform(-2, 2, size=(2, n, 4))).astype(np.float32)
  return boxes, rng.uniform(size=(2, n)).astype(np.float32)


def _none_overlapping(rng, n):
  """Disjoint boxes on a grid (set 1: touching edges, IoU exactly 0)."""
  side = int(np.ceil(np.sqrt(n)))
  r, c = np.divmod(np.arange(n), side)
  gap = np.array([2.0, 0.0])[:, np.newaxis]
  y1, x1 = r[np.newaxis] * 10.0, c[np.newaxis] * 10.0
  boxes = np.stack([y1 + 0 * gap, x1 + 0 * gap, y1 + 10.0 - gap, x1 + 10.0 - gap], axis=-1)
  return boxes.astype(np.float32), rng.uniform(size=(2, n)).astype(np.float32)


CASES = {'random': _random, 'equal_scores': _equal_scores, 'identical': _identical_boxes,
         'zero_area': _zero_area_boxes, 'all_overlapping': _all_overlapping,
         'none_overlapping': _none_overlapping}
# (N boxes, M kept at most): the proposal layer's 6000 -> 300 and 12000 -> 2000 among them.
SIZES = [(1, 5), (300, 100), (6000, 300), (12000, 2000)]


@pytest.mark.parametrize('jit', [False, True], ids=['tf_function', 'xla'])
@pytest.mark.parametrize('n,m', SIZES, ids=[f'{n}to{m}' for n, m in SIZES])
def test_tiled_equals_tensorflows_nms(n, m, jit):
  """Indices and counts of tf.image.non_max_suppression on every case; one compiled
  function per size (thresholds are inputs), so each size compiles once."""
  fn = tf.function(
      lambda b, s, iou: nms.non_max_suppression(b, s, m, iou, method='tiled'),
      jit_compile=jit)
  rng = np.random.default_rng(n)
  for name, make in CASES.items():
    boxes, scores = make(rng, n)
    iou = 0.5 if name != 'none_overlapping' else 0.0
    idx, num = fn(tf.constant(boxes), tf.constant(scores), tf.constant(iou))
    idx, num = idx.numpy(), num.numpy()
    assert idx.shape == (2, m) and num.shape == (2,)
    for s in range(2):
      want = tf.image.non_max_suppression(boxes[s], scores[s], m, iou).numpy()
      assert num[s] == len(want), (name, s)
      np.testing.assert_array_equal(idx[s, :num[s]], want, err_msg=f'{name} set {s}')
      assert not idx[s, num[s]:].any()  # zero padding
    if name == 'identical':
      assert num[0] == 1 and idx[0, 0] == np.flatnonzero(scores[0] == scores[0].max())[0]
    if name == 'none_overlapping':
      assert num.tolist() == [min(n, m)] * 2
    if name == 'all_overlapping':
      assert num.tolist() == [1, 1]


@pytest.mark.parametrize('method', ['kernel', 'tiled', 'batched'])
@pytest.mark.parametrize('jit', [False, True], ids=['tf_function', 'xla'])
def test_every_method_with_a_score_threshold_and_flipped_corners(method, jit):
  """score_threshold, corners given as (y2, x2, y1, x1) for some boxes, sets whose kept
  counts differ (one fills max_output early, one keeps one box), small tiles. Scores
  without ties: XLA's lowering of TF's kernel visits equal scores in another order."""
  rng = np.random.default_rng(5)
  boxes, _ = _random(rng, 700)
  flat, _ = _all_overlapping(rng, 700)
  boxes = np.concatenate([boxes, flat[:1]])
  scores = np.stack([rng.permutation(700) for _ in range(3)]).astype(np.float32) / 700
  flip = rng.uniform(size=boxes.shape[:2]) < 0.3
  boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]
  fn = tf.function(lambda b, s: nms.non_max_suppression(b, s, 150, 0.4, 0.2, method=method,
                                                        tile_size=64), jit_compile=jit)
  idx, num = fn(tf.constant(boxes), tf.constant(scores))
  for s in range(3):
    want = tf.image.non_max_suppression(boxes[s], scores[s], 150, 0.4, 0.2).numpy()
    assert num.numpy()[s] == len(want)
    np.testing.assert_array_equal(idx.numpy()[s, :len(want)], want)
  assert num.numpy()[2] == 1 and num.numpy()[0] == 150


@pytest.mark.parametrize('tile_size', [7, 32, 1000])
@pytest.mark.parametrize('iou_threshold,score_threshold,max_output', [
    (0.3, 0.05, 40), (0.5, float('-inf'), 100), (0.7, 0.5, 7), (0.0, 0.0, 300)])
def test_tiled_matches_the_greedy_loop(iou_threshold, score_threshold, max_output, tile_size):
  rng = np.random.default_rng(int(iou_threshold * 10) + max_output)
  sets, n = 6, 120
  boxes = np.stack([_clustered_boxes(rng, n) for _ in range(sets)])
  scores = rng.uniform(size=(sets, n)).astype(np.float32)
  scores[0] = 0.0  # a set with nothing above the threshold (for thresholds >= 0)
  idx, num = nms.non_max_suppression(tf.constant(boxes), tf.constant(scores), max_output,
                                     iou_threshold, score_threshold, method='tiled',
                                     tile_size=tile_size)
  idx, num = idx.numpy(), num.numpy()
  assert idx.shape == (sets, max_output) and num.shape == (sets,)
  for s in range(sets):
    want = _np_greedy_nms(boxes[s], scores[s], max_output, iou_threshold, score_threshold)
    assert num[s] == len(want)
    assert idx[s, :num[s]].tolist() == want
    assert not idx[s, num[s]:].any()


def test_presorted_input_skips_the_sort_with_the_same_result():
  rng = np.random.default_rng(11)
  boxes, scores = _random(rng, 500)
  scores, order = tf.math.top_k(tf.constant(scores), k=500)
  boxes = tf.gather(tf.constant(boxes), order, batch_dims=1)
  idx, num = nms.non_max_suppression(boxes, scores, 200, 0.6, method='tiled', tile_size=128,
                                     presorted=True)
  for s in range(2):
    want = tf.image.non_max_suppression(boxes[s], scores[s], 200, 0.6).numpy()
    np.testing.assert_array_equal(idx.numpy()[s, :num.numpy()[s]], want)


@pytest.mark.parametrize('method', ['kernel', 'tiled'])
def test_max_output_above_the_box_count_is_padded(method):
  boxes = tf.constant([[[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]]], tf.float32)
  scores = tf.constant([[0.9, 0.8, 0.7]])
  for jit in (False, True):
    fn = tf.function(lambda b, s: nms.non_max_suppression(b, s, 5, 0.5, method=method),
                     jit_compile=jit)
    idx, num = fn(boxes, scores)
    assert idx.numpy().tolist() == [[0, 2, 0, 0, 0]] and num.numpy().tolist() == [2]


def test_unknown_box_count_is_refused_by_the_plain_ops_forms():
  fn = tf.function(lambda b, s: nms.non_max_suppression(b, s, 5, 0.5, method='tiled'),
                   input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None])])
  with pytest.raises(ValueError, match='static number of boxes'):
    fn.get_concrete_function()


def test_auto_picks_tiled_under_xla_or_on_accelerators_and_kernel_else():
  assert nms.resolve_method('auto', accelerator_visible=False) == 'kernel'
  assert nms.resolve_method('auto', accelerator_visible=True) == 'tiled'
  assert nms.resolve_method('kernel', accelerator_visible=True) == 'kernel'
  # On a CPU outside XLA the tiled form takes over for large outputs.
  assert nms.resolve_method('auto', False, max_output_size=nms.CPU_TILED_FROM) == 'tiled'
  assert nms.resolve_method('auto', False, max_output_size=nms.CPU_TILED_FROM - 1) == 'kernel'
  seen = []
  tf.function(lambda: seen.append(nms.resolve_method('auto', accelerator_visible=False)) or 0,
              jit_compile=True)()
  tf.function(lambda: seen.append(nms.resolve_method('auto', accelerator_visible=False)) or 0,
              jit_compile=False)()
  assert seen == ['tiled', 'kernel']
  with pytest.raises(ValueError, match='nms_method'):
    nms.resolve_method('fast')


def test_graph_ops_of_each_method():
  """'tiled' builds no NMS kernel and no op of data-dependent shape; 'kernel' is TF's."""
  spec = [tf.TensorSpec([2, 600, 4]), tf.TensorSpec([2, 600])]

  def op_types(method):
    fn = tf.function(lambda b, s: nms.non_max_suppression(b, s, 100, 0.5, method=method))
    return graph_op_types(fn.get_concrete_function(*spec))

  tiled, kernel = op_types('tiled'), op_types('kernel')
  assert 'NonMaxSuppressionV4' in kernel
  assert 'While' in tiled or 'StatelessWhile' in tiled  # nested bodies are scanned
  assert not {op for op in tiled if op.startswith('NonMaxSuppression')}
  assert not tiled & {'Where', 'Unique', 'UniqueV2', 'PyFunc', 'EagerPyFunc',
                      'NumpyFunction'}
