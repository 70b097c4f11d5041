"""Proposal target layer: samples RoIs for the detection head and builds their targets.

Shape shorthand: B images, P proposals, G padded ground-truth boxes, R sampled RoIs,
K foreground classes (class ids 1..K, 0 = background). Boxes yxyx resized-image pixels.
"""

import keras
import tensorflow as tf

from faster_rcnn_tf import config
from faster_rcnn_tf.layers.box_geometry_layer import BoxGeometryLayer
from faster_rcnn_tf.ops import box_ops
from faster_rcnn_tf.ops import sampling


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class ProposalTargets(BoxGeometryLayer):
  """Adds ground truth to the proposals, labels them and samples R of them.

  A candidate is foreground if its best IoU with a ground-truth box is >= fg_iou, and
  background if that IoU lies in [bg_iou_lo, bg_iou_hi) (bg_iou_lo: see
  `config.ROI_BG_IOU_LO`). At most floor(R * fg_fraction)
  foreground RoIs are sampled; background fills the rest. If there are fewer candidates
  than R, the remaining slots repeat candidates with weight 0 (they add nothing to the
  losses), keeping every shape static.

  Call args:
    rois: float32 [B, P, 4]; roi_valid: bool [B, P]; gt_boxes: float32 [B, G, 4];
    gt_classes: int32 [B, G]; seed: optional int32 [2]; image_offset: global
    position of image 0 (see `ops.sampling.random_keys`).
  Returns dict:
    rois: float32 [B, R, 4] sampled boxes.
    labels: int32 [B, R] class id (0 = background).
    weights: float32 [B, R] 1 for a sampled RoI, 0 for a filler slot.
    box_targets: float32 [B, R, 4 * (K + 1)] encoded deltas divided by box_stds, set only
      in the 4 entries of the RoI's class (foreground RoIs only).
    box_weights: float32 [B, R, 4 * (K + 1)] 1 in those entries, 0 elsewhere.
    max_iou: float32 [B, R] best IoU of each sampled RoI with the ground truth.
  """

  def __init__(self, num_classes, num_samples=128, fg_fraction=0.25, fg_iou=0.5,
               bg_iou_hi=0.5, bg_iou_lo=config.ROI_BG_IOU_LO, box_stds=box_ops.HEAD_BOX_STDS, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.num_samples = num_samples
    self.fg_fraction = fg_fraction
    self.fg_iou = fg_iou
    self.bg_iou_hi = bg_iou_hi
    self.bg_iou_lo = bg_iou_lo
    self.box_stds = tuple(box_stds)

  def call(self, rois, roi_valid, gt_boxes, gt_classes, seed=None, image_offset=0):
    gt_valid = gt_classes > 0
    candidates = tf.concat([rois, gt_boxes], axis=1)  # [B, P + G, 4]
    valid = tf.concat([roi_valid, gt_valid], axis=1)
    overlaps = box_ops.iou(candidates, gt_boxes)
    overlaps = tf.where(gt_valid[:, tf.newaxis, :], overlaps, -1.0)
    max_iou = tf.reduce_max(overlaps, axis=2)
    matched = tf.argmax(overlaps, axis=2, output_type=tf.int32)
    fg = valid & (max_iou >= self.fg_iou)
    bg = valid & (max_iou < self.bg_iou_hi) & (max_iou >= self.bg_iou_lo)
    has_gt = tf.reduce_any(gt_valid, axis=1, keepdims=True)
    # With no ground truth at all every valid proposal is background.
    bg = bg | (valid & ~has_gt)
    fg = fg & has_gt
    keys = sampling.random_keys(tf.shape(max_iou), seed, image_offset)
    fg_pick, bg_pick = sampling.sample_balanced(fg, bg, self.num_samples, self.fg_fraction,
                                                keys)
    # Order: sampled fg, then sampled bg, then fillers (any candidate).
    order_score = tf.where(fg_pick, 2.0 + keys, tf.where(bg_pick, 1.0 + keys, keys))
    _, idx = tf.math.top_k(order_score, k=self.num_samples)  # [B, R]
    picked_fg = tf.gather(fg_pick, idx, batch_dims=1)
    picked_bg = tf.gather(bg_pick, idx, batch_dims=1)
    weights = tf.cast(picked_fg | picked_bg, tf.float32)
    sampled_rois = tf.gather(candidates, idx, batch_dims=1)
    gt_idx = tf.gather(matched, idx, batch_dims=1)
    labels = tf.gather(gt_classes, gt_idx, batch_dims=1)
    labels = tf.where(picked_fg, labels, 0)
    gt_for_roi = tf.gather(gt_boxes, gt_idx, batch_dims=1)
    deltas = box_ops.encode_boxes(gt_for_roi, sampled_rois, self.box_stds)  # [B, R, 4]
    class_slot = tf.one_hot(labels, self.num_classes + 1)  # [B, R, K + 1]
    slot = class_slot * tf.cast(picked_fg, tf.float32)[..., tf.newaxis]
    box_weights = tf.repeat(slot, 4, axis=2)
    box_targets = tf.reshape(slot[..., tf.newaxis] * deltas[:, :, tf.newaxis, :],
                             tf.shape(box_weights))
    out = {'rois': sampled_rois, 'labels': labels, 'weights': weights,
           'box_targets': box_targets, 'box_weights': box_weights,
           'max_iou': tf.gather(max_iou, idx, batch_dims=1)}
    return {k: tf.stop_gradient(v) for k, v in out.items()}

  def get_config(self):
    config = super().get_config()
    config.update(num_classes=self.num_classes, num_samples=self.num_samples,
                  fg_fraction=self.fg_fraction, fg_iou=self.fg_iou, bg_iou_hi=self.bg_iou_hi,
                  bg_iou_lo=self.bg_iou_lo, box_stds=self.box_stds)
    return config
