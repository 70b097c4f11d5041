"""Tests of faster_rcnn_tf.batch_splitting: sub-batch sizes, the split-and-join against a
numpy computation of the whole batch, static and unknown batch sizes."""

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf import batch_splitting


@pytest.mark.parametrize('value, accelerator_visible, expected', [
    ('auto', False, batch_splitting.CPU_SPLITS), ('auto', True, 1), (' AUTO ', False, 2),
    (1, False, 1), (3, True, 3), ('4', False, 4), (2.0, False, 2)])
def test_resolve_splits(value, accelerator_visible, expected):
  assert batch_splitting.resolve_splits(value, accelerator_visible=accelerator_visible) == expected


def test_auto_is_one_inside_xla_compilation():
  resolved = {}

  def record(jit):
    resolved[jit] = batch_splitting.resolve_splits('auto', accelerator_visible=False)
    return tf.constant(0)

  for jit in (False, True):
    tf.function(lambda jit=jit: record(jit), jit_compile=jit)()
  assert resolved == {False: batch_splitting.CPU_SPLITS, True: 1}


@pytest.mark.parametrize('value', [0, -2, '0', 'two', 1.5, '', None, True])
def test_resolve_splits_refuses_bad_values_naming_the_option(value):
  with pytest.raises(ValueError, match='inference_splits'):
    batch_splitting.resolve_splits(value, accelerator_visible=False)


@pytest.mark.parametrize('batch, splits, expected', [
    (8, 2, [4, 4]), (7, 2, [4, 3]), (8, 3, [3, 3, 2]), (2, 5, [1, 1]), (5, 1, [5]),
    (10, 4, [3, 3, 2, 2])])
def test_sub_batch_sizes_static(batch, splits, expected):
  assert batch_splitting.sub_batch_sizes(batch, splits) == expected


@pytest.mark.parametrize('batch, splits', [(7, 3), (8, 2), (3, 3), (11, 4)])
def test_sub_batch_sizes_of_a_tensor_batch(batch, splits):
  sizes = [int(s) for s in batch_splitting.sub_batch_sizes(tf.constant(batch), splits)]
  assert sum(sizes) == batch and len(sizes) == splits
  assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def _per_image(images, labels):
  """A per-image computation with a nested output: row sums scaled by the label, and the
  image's running maximum over its rows (independent of the other images)."""
  scaled = tf.reduce_sum(images, axis=2) * tf.cast(labels, tf.float32)[:, tf.newaxis]
  return {'scaled': scaled, 'pair': (tf.math.cumulative_logsumexp(images, axis=1),
                                     labels * 2)}


def _numpy_per_image(images, labels):
  scaled = images.sum(axis=2) * labels[:, None].astype(np.float32)
  running = np.log(np.cumsum(np.exp(images.astype(np.float64)), axis=1))
  return scaled, running, labels * 2


def _assert_matches_numpy(out, images, labels):
  scaled, running, doubled = _numpy_per_image(images, labels)
  np.testing.assert_allclose(out['scaled'].numpy(), scaled, rtol=1e-5)
  np.testing.assert_allclose(out['pair'][0].numpy(), running, rtol=1e-5)
  np.testing.assert_array_equal(out['pair'][1].numpy(), doubled)


def _data(batch, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.uniform(-1, 1, (batch, 5, 3)).astype(np.float32),
          rng.integers(1, 9, batch).astype(np.int32))


@pytest.mark.parametrize('batch, splits, expected_calls', [
    (7, 2, [4, 3]), (6, 3, [2, 2, 2]), (2, 4, [1, 1]), (1, 2, [1]), (5, 1, [5])])
def test_static_batch_runs_each_sub_batch_once_and_joins_in_order(batch, splits,
                                                                   expected_calls):
  images, labels = _data(batch)
  seen = []

  def fn(x, y):
    seen.append(x.shape[0])
    return _per_image(x, y)

  out = tf.function(lambda x, y: batch_splitting.map_sub_batches(fn, (x, y), splits))(
      tf.constant(images), tf.constant(labels))
  assert seen == expected_calls
  _assert_matches_numpy(out, images, labels)


def test_unknown_batch_splits_when_large_enough_and_runs_whole_otherwise():
  traced = []

  def fn(x, y):
    traced.append(x.shape[0])
    return _per_image(x, y)

  run = tf.function(
      lambda x, y: batch_splitting.map_sub_batches(fn, (x, y), 3),
      input_signature=[tf.TensorSpec([None, 5, 3], tf.float32),
                       tf.TensorSpec([None], tf.int32)])
  for batch in (1, 2, 3, 8):
    images, labels = _data(batch, seed=batch)
    out = run(tf.constant(images), tf.constant(labels))
    assert out['scaled'].shape[0] == batch
    _assert_matches_numpy(out, images, labels)
  # One trace: three sub-batch calls and the whole-batch branch, all of unknown size.
  assert traced == [None] * 4


def test_sub_batches_are_independent_branches_of_the_graph():
  """The point of splitting: no op of one sub-batch waits for another's (so that the
  executor can run them at the same time)."""
  def fn(x, y):
    return {'out': tf.identity(tf.reduce_sum(x, axis=[1, 2]) + tf.cast(y, tf.float32),
                               name='sub_batch_result')}

  images, labels = _data(6)
  graph = tf.function(lambda x, y: batch_splitting.map_sub_batches(fn, (x, y), 2)
                      ).get_concrete_function(tf.constant(images),
                                              tf.constant(labels)).graph
  results = [op for op in graph.get_operations() if op.name.startswith('sub_batch_result')]
  assert len(results) == 2

  def ancestors(op):
    seen, stack = set(), [op]
    while stack:
      for t in stack.pop().inputs:
        if t.op.name not in seen:
          seen.add(t.op.name)
          stack.append(t.op)
    return seen

  first, second = results
  assert first.name not in ancestors(second) and second.name not in ancestors(first)
  shared = ancestors(first) & ancestors(second)
  assert all(graph.get_operation_by_name(n).type in ('Placeholder', 'Const', 'SplitV')
             for n in shared), shared
