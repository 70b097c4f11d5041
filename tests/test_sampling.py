"""Tests of faster_rcnn_tf.ops.sampling."""

import numpy as np
import tensorflow as tf

from faster_rcnn_tf.ops import sampling


def _random_mask(rng, shape, p):
  return rng.uniform(size=shape) < p


def test_select_random_counts_and_subset():
  rng = np.random.default_rng(0)
  mask = _random_mask(rng, (4, 200), 0.1)
  mask[3] = False  # no candidates at all
  count = np.array([5, 100, 0, 7], np.int32)
  keys = tf.random.stateless_uniform([4, 200], seed=[1, 2])
  picked = sampling.select_random(tf.constant(mask), 128, tf.constant(count), keys).numpy()
  assert picked.dtype == bool and picked.shape == mask.shape
  assert not np.any(picked & ~mask), 'picked entries must be candidates'
  np.testing.assert_array_equal(picked.sum(1), np.minimum(count, mask.sum(1)))


def test_select_random_picks_highest_keys():
  mask = np.array([[True, False, True, True, True, False]])
  keys = tf.constant([[0.1, 0.99, 0.5, 0.3, 0.9, 0.95]])
  picked = sampling.select_random(tf.constant(mask), 4, tf.constant([2]), keys).numpy()
  np.testing.assert_array_equal(picked, [[False, False, True, False, True, False]])


def test_select_random_max_count_larger_than_n():
  mask = np.array([[True, True, False]])
  picked = sampling.select_random(tf.constant(mask), 10, tf.constant([10]),
                                  tf.constant([[0.2, 0.1, 0.5]])).numpy()
  np.testing.assert_array_equal(picked, mask)


def test_sample_balanced_fraction_and_counts():
  rng = np.random.default_rng(1)
  n = 1000
  label = rng.integers(0, 3, size=(3, n))  # 0 neg, 1 pos, 2 neither
  label[1] = np.where(label[1] == 1, 2, label[1])  # row 1: exactly 10 positives
  label[1, rng.choice(n, 10, replace=False)] = 1
  label[2] = np.where(label[2] == 1, 2, label[2])  # row 2: no positives
  pos, neg = label == 1, label == 0
  keys = tf.random.stateless_uniform([3, n], seed=[3, 4])
  sp, sn = sampling.sample_balanced(tf.constant(pos), tf.constant(neg), 256, 0.5, keys)
  sp, sn = sp.numpy(), sn.numpy()
  assert not np.any(sp & ~pos) and not np.any(sn & ~neg)
  want_pos = np.minimum(pos.sum(1), 128)
  np.testing.assert_array_equal(sp.sum(1), want_pos)
  np.testing.assert_array_equal(sn.sum(1), np.minimum(256 - want_pos, neg.sum(1)))
  assert np.all(sp.sum(1) + sn.sum(1) <= 256)
  # Row 0 has plenty of both: exactly 128 + 128.
  assert sp[0].sum() == 128 and sn[0].sum() == 128
  # Row 2 (no positives): negatives fill the whole budget.
  assert sp[1].sum() == 10 and sn[1].sum() == 246
  assert sp[2].sum() == 0 and sn[2].sum() == 256


def test_sample_balanced_other_fraction_floor():
  pos = np.ones((1, 500), bool)
  pos[0, 250:] = False
  neg = ~pos
  keys = tf.random.stateless_uniform([1, 500], seed=[0, 9])
  sp, sn = sampling.sample_balanced(tf.constant(pos), tf.constant(neg), 128, 0.25, keys)
  assert int(tf.reduce_sum(tf.cast(sp, tf.int32))) == 32  # floor(128 * 0.25)
  assert int(tf.reduce_sum(tf.cast(sn, tf.int32))) == 96


def test_different_keys_give_different_picks_and_seeds_reproduce():
  mask = tf.constant(np.ones((1, 500), bool))
  count = tf.constant([50])
  k1 = sampling.random_keys([1, 500], seed=tf.constant([1, 2]))
  k1b = sampling.random_keys([1, 500], seed=tf.constant([1, 2]))
  k2 = sampling.random_keys([1, 500], seed=tf.constant([1, 3]))
  np.testing.assert_array_equal(k1.numpy(), k1b.numpy())
  assert np.all((k1.numpy() >= 0) & (k1.numpy() < 1))
  p1 = sampling.select_random(mask, 64, count, k1).numpy()
  p1b = sampling.select_random(mask, 64, count, k1b).numpy()
  p2 = sampling.select_random(mask, 64, count, k2).numpy()
  np.testing.assert_array_equal(p1, p1b)
  assert np.any(p1 != p2)
  # Unseeded keys: two draws differ.
  u1 = sampling.random_keys([1, 500]).numpy()
  u2 = sampling.random_keys([1, 500]).numpy()
  assert u1.shape == (1, 500) and np.any(u1 != u2)


def test_select_random_is_roughly_uniform():
  # Each of 20 candidates is picked 5 times out of 20 on average over many seeds.
  mask = tf.constant(np.ones((400, 20), bool))
  keys = tf.random.stateless_uniform([400, 20], seed=[5, 6])
  picked = sampling.select_random(mask, 5, tf.fill([400], 5), keys).numpy()
  freq = picked.mean(0)
  assert np.all(np.abs(freq - 0.25) < 0.1), freq


def test_select_random_compiles_with_xla():
  mask = tf.constant(np.random.default_rng(2).uniform(size=(2, 64)) < 0.5)
  keys = tf.random.stateless_uniform([2, 64], seed=[7, 8])
  count = tf.constant([3, 40])
  eager = sampling.select_random(mask, 16, count, keys)
  jit = tf.function(lambda m, c, k: sampling.select_random(m, 16, c, k), jit_compile=True)
  np.testing.assert_array_equal(jit(mask, count, keys).numpy(), eager.numpy())


def test_stateless_keys_identical_with_and_without_xla():
  # A seeded training step must sample the same entries with and without jit_compile.
  fn = lambda s: sampling.random_keys([2, 3000], seed=s)
  jit = tf.function(fn, jit_compile=True)
  graph = tf.function(fn)
  for seed in ([1, 2], [0, 7919], [-3, 5], [123456, -1], [2**31 - 1, 0]):
    s = tf.constant(seed, tf.int32)
    eager = fn(s).numpy()
    np.testing.assert_array_equal(jit(s).numpy(), eager)
    np.testing.assert_array_equal(graph(s).numpy(), eager)
    assert eager.dtype == np.float32 and eager.min() >= 0.0 and eager.max() < 1.0
  # int64 seeds work too.
  s64 = tf.constant([4, 9], tf.int64)
  np.testing.assert_array_equal(jit(s64).numpy(), fn(s64).numpy())


def test_stateless_keys_rows_depend_on_global_image_position():
  seed = tf.constant([3, 8])
  whole = sampling.random_keys([4, 100], seed=seed).numpy()
  first = sampling.random_keys([2, 100], seed=seed, image_offset=0).numpy()
  second = sampling.random_keys([2, 100], seed=seed, image_offset=2).numpy()
  np.testing.assert_array_equal(np.concatenate([first, second]), whole)
  assert np.all(whole[0] != whole[1])  # rows differ
