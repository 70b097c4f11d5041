"""Proposal layer: RPN outputs -> a fixed number of RoIs per image (no ground truth).

Shape shorthand: B images, N anchors, P post-NMS proposals. Boxes yxyx pixels of the
resized image. Padding proposals (when NMS keeps fewer than P) are zero boxes with
`valid` False and score 0.
"""

import keras
import tensorflow as tf

from faster_rcnn_tf.layers.box_geometry_layer import BoxGeometryLayer
from faster_rcnn_tf.ops import box_ops


def _nms_padded(boxes, scores, max_output_size, iou_threshold):
  """Greedy NMS of one image with a static output size: (indices [P], num_valid [])."""
  indices, num_valid = tf.raw_ops.NonMaxSuppressionV4(
      boxes=boxes, scores=scores, max_output_size=max_output_size,
      iou_threshold=iou_threshold, score_threshold=tf.constant(float('-inf')),
      pad_to_max_output_size=True)
  return indices, num_valid


def generate_proposals(scores, deltas, anchors, image_sizes, pre_nms_topk, post_nms_topk,
                       nms_iou, min_size):
  """Decode, clip, drop tiny boxes, pre-NMS top-k, NMS, post-NMS top-k.

  Args:
    scores: float [B, N] foreground probabilities; deltas: float [B, N, 4];
    anchors: float32 [N, 4]; image_sizes: int32 [B, 2]; pre_nms_topk, post_nms_topk:
    static ints; nms_iou: float; min_size: boxes with a side < min_size pixels are dropped.
  Returns:
    rois float32 [B, P, 4], roi_scores float32 [B, P], valid bool [B, P].
  """
  scores = tf.cast(scores, tf.float32)
  boxes = box_ops.decode_boxes(deltas, anchors[tf.newaxis])
  boxes = box_ops.clip_boxes(boxes, image_sizes)
  small = ((boxes[..., 2] - boxes[..., 0]) < min_size) | (
      (boxes[..., 3] - boxes[..., 1]) < min_size)
  # Dropped boxes get a score below every real one; they are removed after NMS.
  scores = tf.where(small, -1.0, scores)
  k = pre_nms_topk
  if scores.shape[1] is not None:
    k = min(k, scores.shape[1])
  else:
    k = tf.minimum(k, tf.shape(scores)[1])
  top_scores, top_idx = tf.math.top_k(scores, k=k, sorted=True)
  top_boxes = tf.gather(boxes, top_idx, batch_dims=1)

  # XLA's NMS wants max_output_size <= the number of boxes: ask for at most k and pad.
  nms_size = post_nms_topk if not isinstance(k, int) else min(post_nms_topk, k)

  def per_image(args):
    img_boxes, img_scores = args
    idx, num_valid = _nms_padded(img_boxes, img_scores, nms_size, nms_iou)
    if nms_size < post_nms_topk:
      idx = tf.pad(idx, [[0, post_nms_topk - nms_size]])
    return idx, num_valid

  idx, num_valid = tf.map_fn(per_image, (top_boxes, top_scores),
                             fn_output_signature=(tf.TensorSpec([post_nms_topk], tf.int32),
                                                  tf.TensorSpec([], tf.int32)))
  rois = tf.gather(top_boxes, idx, batch_dims=1)
  roi_scores = tf.gather(top_scores, idx, batch_dims=1)
  valid = (tf.range(post_nms_topk)[tf.newaxis] < num_valid[:, tf.newaxis]) & (roi_scores >= 0.0)
  rois = tf.where(valid[..., tf.newaxis], rois, 0.0)
  roi_scores = tf.where(valid, roi_scores, 0.0)
  return rois, roi_scores, valid


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class ProposalLayer(BoxGeometryLayer):
  """Keras wrapper of `generate_proposals` with separate train and test numbers.

  Call args: scores [B, N], deltas [B, N, 4], anchors [N, 4], image_sizes [B, 2],
  training (bool). Returns (rois [B, P, 4], roi_scores [B, P], valid [B, P]).
  """

  def __init__(self, train_pre_nms_topk=12000, train_post_nms_topk=2000,
               test_pre_nms_topk=6000, test_post_nms_topk=300, nms_iou=0.7, min_size=0.0,
               **kwargs):
    super().__init__(**kwargs)
    self.train_pre_nms_topk = train_pre_nms_topk
    self.train_post_nms_topk = train_post_nms_topk
    self.test_pre_nms_topk = test_pre_nms_topk
    self.test_post_nms_topk = test_post_nms_topk
    self.nms_iou = nms_iou
    self.min_size = min_size

  def call(self, scores, deltas, anchors, image_sizes, training=False):
    pre = self.train_pre_nms_topk if training else self.test_pre_nms_topk
    post = self.train_post_nms_topk if training else self.test_post_nms_topk
    outputs = generate_proposals(tf.stop_gradient(scores), tf.stop_gradient(deltas), anchors,
                                 image_sizes, pre, post, self.nms_iou, self.min_size)
    return tuple(tf.stop_gradient(t) for t in outputs)

  def get_config(self):
    config = super().get_config()
    config.update(train_pre_nms_topk=self.train_pre_nms_topk,
                  train_post_nms_topk=self.train_post_nms_topk,
                  test_pre_nms_topk=self.test_pre_nms_topk,
                  test_post_nms_topk=self.test_post_nms_topk, nms_iou=self.nms_iou,
                  min_size=self.min_size)
    return config
