"""Anchor target layer: RPN training labels and regression targets (training only).

Shape shorthand: B images, N anchors (H * W * A of the feature map), G padded
ground-truth boxes. Boxes are yxyx pixels of the resized image (see `ops.box_ops`).
"""

import keras
import tensorflow as tf

from faster_rcnn_tf.layers.box_geometry_layer import BoxGeometryLayer
from faster_rcnn_tf.ops import box_ops
from faster_rcnn_tf.ops import sampling

IGNORE = -1
NEGATIVE = 0
POSITIVE = 1


def anchors_inside(anchors, image_sizes, allowed_border=0.0):
  """bool [B, N]: anchors lying entirely inside each image's valid (unpadded) area."""
  size = tf.cast(image_sizes, tf.float32)[:, tf.newaxis, :]  # [B, 1, 2]
  a = anchors[tf.newaxis]
  return ((a[..., 0] >= -allowed_border) & (a[..., 1] >= -allowed_border)
          & (a[..., 2] <= size[..., 0] + allowed_border)
          & (a[..., 3] <= size[..., 1] + allowed_border))


def assign_anchor_labels(anchors, inside, gt_boxes, gt_valid, positive_iou=0.7,
                         negative_iou=0.3):
  """Labels every anchor before sampling.

  Negative if its best IoU with any ground truth is < negative_iou; positive if it is
  >= positive_iou or if it is (one of) the best inside anchor(s) of some ground-truth box
  (positives win over negatives); ignored otherwise and always when outside the image.

  Args:
    anchors: float32 [N, 4]; inside: bool [B, N]; gt_boxes: float32 [B, G, 4];
    gt_valid: bool [B, G].
  Returns:
    labels int32 [B, N] in {-1, 0, 1}; matched_gt int32 [B, N] (index of the best gt).
  """
  num_images = tf.shape(gt_boxes)[0]
  overlaps = box_ops.iou(tf.broadcast_to(anchors[tf.newaxis],
                                         [num_images, tf.shape(anchors)[0], 4]), gt_boxes)
  overlaps = tf.where(gt_valid[:, tf.newaxis, :], overlaps, -1.0)  # [B, N, G]
  max_iou = tf.reduce_max(overlaps, axis=2)
  matched_gt = tf.argmax(overlaps, axis=2, output_type=tf.int32)
  inside_overlaps = tf.where(inside[..., tf.newaxis], overlaps, -1.0)
  gt_best = tf.reduce_max(inside_overlaps, axis=1, keepdims=True)  # [B, 1, G]
  is_best = (inside_overlaps >= gt_best - 1e-6) & (gt_best > 0.0) & gt_valid[:, tf.newaxis]
  best_for_some_gt = tf.reduce_any(is_best, axis=2)
  # An anchor that is the best for some gt is matched to that gt.
  best_gt = tf.argmax(tf.cast(is_best, tf.float32) * (1.0 + overlaps), axis=2,
                      output_type=tf.int32)
  matched_gt = tf.where(best_for_some_gt, best_gt, matched_gt)
  labels = tf.fill(tf.shape(max_iou), IGNORE)
  labels = tf.where(max_iou < negative_iou, NEGATIVE, labels)
  labels = tf.where((max_iou >= positive_iou) | best_for_some_gt, POSITIVE, labels)
  labels = tf.where(inside, labels, IGNORE)
  return labels, matched_gt


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class AnchorTargets(BoxGeometryLayer):
  """Samples RPN anchors and computes their targets.

  Call args:
    anchors: float32 [N, 4]; image_sizes: int32 [B, 2]; gt_boxes: float32 [B, G, 4];
    gt_classes: int32 [B, G] (0 = padding); seed: optional int32 [2] stateless seed;
    image_offset: global position of image 0 (see `ops.sampling.random_keys`).
  Returns dict:
    labels: int32 [B, N], 1 sampled positive, 0 sampled negative, -1 not sampled.
    box_targets: float32 [B, N, 4] encoded (dy, dx, dh, dw) (unnormalized), zero where
      the anchor is not a sampled positive.
    box_weights: float32 [B, N, 4], 1 for sampled positives.
  """

  def __init__(self, positive_iou=0.7, negative_iou=0.3, num_samples=256,
               positive_fraction=0.5, allowed_border=0.0, **kwargs):
    super().__init__(**kwargs)
    self.positive_iou = positive_iou
    self.negative_iou = negative_iou
    self.num_samples = num_samples
    self.positive_fraction = positive_fraction
    self.allowed_border = allowed_border

  def call(self, anchors, image_sizes, gt_boxes, gt_classes, seed=None, image_offset=0):
    gt_valid = gt_classes > 0
    inside = anchors_inside(anchors, image_sizes, self.allowed_border)
    labels, matched = assign_anchor_labels(anchors, inside, gt_boxes, gt_valid,
                                           self.positive_iou, self.negative_iou)
    keys = sampling.random_keys(tf.shape(labels), seed, image_offset)
    pos, neg = sampling.sample_balanced(labels == POSITIVE, labels == NEGATIVE,
                                        self.num_samples, self.positive_fraction, keys)
    sampled = tf.where(pos, POSITIVE, tf.where(neg, NEGATIVE, IGNORE))
    matched_boxes = tf.gather(gt_boxes, matched, batch_dims=1)  # [B, N, 4]
    targets = box_ops.encode_boxes(matched_boxes, anchors[tf.newaxis])
    weights = tf.cast(pos, tf.float32)[..., tf.newaxis] * tf.ones([4])
    targets = targets * weights
    return {'labels': tf.stop_gradient(sampled), 'box_targets': tf.stop_gradient(targets),
            'box_weights': weights}

  def get_config(self):
    config = super().get_config()
    config.update(positive_iou=self.positive_iou, negative_iou=self.negative_iou,
                  num_samples=self.num_samples, positive_fraction=self.positive_fraction,
                  allowed_border=self.allowed_border)
    return config
