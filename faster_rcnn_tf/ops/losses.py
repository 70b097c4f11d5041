"""Losses: sparse softmax cross-entropy over sampled entries and sigma smooth-L1.

Normalization follows the reference: the classification loss is the mean over the sampled
entries; the box loss is the smooth-L1 summed over the regression targets of positive
entries and divided by the number of sampled entries (the reference's outside weight of
1 / num_examples for the RPN, and the mean over RoIs for the head). Over a batch the
entries of all images are pooled. With no sampled positive the box loss is exactly 0.
"""

import tensorflow as tf


def smooth_l1(diff, sigma):
  """Elementwise smooth-L1: 0.5 (sigma x)^2 if |x| < 1 / sigma^2, else |x| - 0.5 / sigma^2."""
  sigma2 = sigma * sigma
  abs_diff = tf.abs(diff)
  return tf.where(abs_diff < 1.0 / sigma2, 0.5 * sigma2 * tf.square(diff),
                  abs_diff - 0.5 / sigma2)


def sampled_softmax_loss(logits, labels, weights):
  """Mean cross-entropy over entries with weight > 0.

  Args:
    logits: float [..., C]; labels: int32 [...] in [0, C); weights: float32 [...] (0 or 1).
  Returns:
    float32 scalar; 0 when nothing is sampled.
  """
  labels = tf.maximum(labels, 0)
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                      logits=tf.cast(logits, tf.float32))
  return tf.math.divide_no_nan(tf.reduce_sum(ce * weights), tf.reduce_sum(weights))


def sampled_box_loss(pred, target, box_weights, num_sampled, sigma):
  """Smooth-L1 over weighted regression entries divided by the number of sampled entries.

  Args:
    pred, target: float [..., D] deltas; box_weights: float32 [..., D] (1 where a target
      counts, 0 elsewhere); num_sampled: float32 scalar; sigma: float.
  Returns:
    float32 scalar; exactly 0 when box_weights is all zero.
  """
  diff = tf.cast(pred, tf.float32) - target
  loss = tf.reduce_sum(smooth_l1(diff, sigma) * box_weights)
  return tf.math.divide_no_nan(loss, num_sampled)
