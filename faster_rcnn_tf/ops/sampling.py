"""Random subsampling with static shapes: `top_k` over random keys, never boolean masks
of unknown size, so it batches, compiles with XLA and runs on TPUs."""

import tensorflow as tf


_KEY_BITS = 24


def random_keys(shape, seed=None, image_offset=0):
  """float32 uniform keys [B, N] in [0, 1).

  With `seed` (int32 [2]) the keys are stateless and each image's row depends only on
  the seed and the image's global position `image_offset + b` in the batch, so a batch
  split across replicas samples exactly what one device would sample for the whole batch.
  Without it they come from TF's global random state.

  Stateless keys are also identical with and without XLA (jit_compile), so a seeded step
  samples the same entries either way: TF's CPU kernels and XLA produce different *float*
  stateless draws, and different integer draws for negative seeds, but agree on integer
  draws from non-negative seeds. The keys are therefore 24-bit integers (exact in
  float32) drawn from each row's seed reduced to its low 31 bits.
  """
  if seed is None:
    return tf.random.uniform(shape)
  seed = tf.cast(seed, tf.int64)
  positions = tf.range(shape[0], dtype=tf.int64) + tf.cast(image_offset, tf.int64)
  scale = 1.0 / (1 << _KEY_BITS)

  def row(i):
    row_seed = tf.bitwise.bitwise_and(seed + tf.stack([i, tf.constant(0, tf.int64)]),
                                      tf.constant(0x7FFFFFFF, tf.int64))
    bits = tf.random.stateless_uniform([shape[1]], seed=row_seed, minval=0,
                                       maxval=1 << _KEY_BITS, dtype=tf.int32)
    return tf.cast(bits, tf.float32) * scale

  static = tf.get_static_value(shape)  # keeps a static N static (XLA, TPUs)
  width = None if static is None or static[1] is None else int(static[1])
  return tf.map_fn(row, positions, fn_output_signature=tf.TensorSpec([width], tf.float32))


def select_random(mask, max_count, count, keys):
  """Picks `count[b]` random True entries of each row of `mask`.

  Args:
    mask: bool [B, N] candidates.
    max_count: static int, an upper bound of `count` (the `top_k` size).
    count: int32 [B], how many to pick in each row (<= max_count).
    keys: float32 [B, N] random keys in [0, 1) (decide which candidates win).
  Returns:
    bool [B, N]: the picked entries, a subset of `mask` with min(count, sum(mask)) per row.
  """
  n = tf.shape(mask)[1]
  k = max_count
  if mask.shape[1] is not None:
    k = min(max_count, mask.shape[1])
  score = tf.where(mask, keys, -1.0)
  top_scores, top_idx = tf.math.top_k(score, k=k)  # [B, k]
  keep = tf.logical_and(top_scores >= 0.0,
                        tf.range(k)[tf.newaxis, :] < count[:, tf.newaxis])
  return tf.reduce_any(
      tf.logical_and(tf.one_hot(top_idx, n, on_value=True, off_value=False, dtype=tf.bool),
                     keep[..., tf.newaxis]), axis=1)


def sample_balanced(positive, negative, num_samples, positive_fraction, keys):
  """Balanced positive / negative sampling as in the reference target layers.

  At most `floor(num_samples * positive_fraction)` positives are kept; negatives fill the
  rest up to `num_samples`. Both picks are uniform at random among the candidates.

  Args:
    positive, negative: bool [B, N], disjoint.
    num_samples: static int.
    positive_fraction: float in (0, 1].
    keys: float32 [B, N] random keys.
  Returns:
    (sampled_positive, sampled_negative): bool [B, N] each.
  """
  max_pos = int(num_samples * positive_fraction)
  num_pos = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), max_pos)
  pos = select_random(positive, max_pos, num_pos, keys)
  num_neg = num_samples - tf.reduce_sum(tf.cast(pos, tf.int32), axis=1)
  neg = select_random(negative, num_samples, num_neg, 1.0 - keys)
  return pos, neg
