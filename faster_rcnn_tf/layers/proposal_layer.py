"""Proposal layer: RPN outputs -> a fixed number of RoIs per image (no ground truth).

Shape shorthand: B images, N anchors, P post-NMS proposals. Boxes yxyx pixels of the
resized image. Padding proposals (when NMS keeps fewer than P) are zero boxes with
`valid` False and score 0.
"""

import keras
import tensorflow as tf

from faster_rcnn_tf.layers.box_geometry_layer import BoxGeometryLayer
from faster_rcnn_tf.ops import box_ops
from faster_rcnn_tf.ops import nms


def generate_proposals(scores, deltas, anchors, image_sizes, pre_nms_topk, post_nms_topk,
                       nms_iou, min_size, nms_method='auto', nms_tile_size=nms.TILE_SIZE):
  """Decode, clip, drop tiny boxes, pre-NMS top-k, NMS, post-NMS top-k.

  Args:
    scores: float [B, N] foreground probabilities; deltas: float [B, N, 4];
    anchors: float32 [N, 4]; image_sizes: int32 [B, 2]; pre_nms_topk, post_nms_topk:
    static ints; nms_iou: float; min_size: boxes with a side < min_size pixels are dropped.
    nms_method, nms_tile_size: `ops.nms.non_max_suppression`'s method ('auto', 'kernel'
    or 'tiled'; same proposals) and tile size.
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
  method = nms.resolve_method(nms_method, max_output_size=post_nms_topk)
  k = pre_nms_topk
  if scores.shape[1] is not None:
    k = min(k, scores.shape[1])
  elif method != 'kernel':
    # The plain-ops NMS needs a static box count: pad with pre_nms_topk boxes scoring
    # -inf, which are no NMS candidates (score_threshold -inf) and never come out.
    scores = tf.pad(scores, [[0, 0], [0, pre_nms_topk]], constant_values=float('-inf'))
    boxes = tf.pad(boxes, [[0, 0], [0, pre_nms_topk], [0, 0]])
  else:
    k = tf.minimum(k, tf.shape(scores)[1])
  top_scores, top_idx = tf.math.top_k(scores, k=k, sorted=True)
  top_boxes = tf.gather(boxes, top_idx, batch_dims=1)
  # top_k's order (descending, equal scores by index) is the NMS's visiting order.
  idx, num_valid = nms.non_max_suppression(top_boxes, top_scores, post_nms_topk, nms_iou,
                                           method=method, tile_size=nms_tile_size,
                                           presorted=True)
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

  nms_method: `ops.nms` method, 'auto' (decided when traced: 'tiled' under XLA, when a
    GPU / TPU is visible or for post-NMS counts from `nms.CPU_TILED_FROM` on, TF's kernel
    else), 'kernel' or 'tiled'. Same proposals.
  nms_tile_size: boxes per tile of the 'tiled' method.
  """

  def __init__(self, train_pre_nms_topk=12000, train_post_nms_topk=2000,
               test_pre_nms_topk=6000, test_post_nms_topk=300, nms_iou=0.7, min_size=0.0,
               nms_method='auto', nms_tile_size=nms.TILE_SIZE, **kwargs):
    super().__init__(**kwargs)
    self.train_pre_nms_topk = train_pre_nms_topk
    self.train_post_nms_topk = train_post_nms_topk
    self.test_pre_nms_topk = test_pre_nms_topk
    self.test_post_nms_topk = test_post_nms_topk
    self.nms_iou = nms_iou
    self.min_size = min_size
    nms.resolve_method(nms_method)  # validates
    self.nms_method = nms_method
    self.nms_tile_size = int(nms_tile_size)

  def call(self, scores, deltas, anchors, image_sizes, training=False):
    pre = self.train_pre_nms_topk if training else self.test_pre_nms_topk
    post = self.train_post_nms_topk if training else self.test_post_nms_topk
    outputs = generate_proposals(tf.stop_gradient(scores), tf.stop_gradient(deltas), anchors,
                                 image_sizes, pre, post, self.nms_iou, self.min_size,
                                 self.nms_method, self.nms_tile_size)
    return tuple(tf.stop_gradient(t) for t in outputs)

  def get_config(self):
    config = super().get_config()
    config.update(train_pre_nms_topk=self.train_pre_nms_topk,
                  train_post_nms_topk=self.train_post_nms_topk,
                  test_pre_nms_topk=self.test_pre_nms_topk,
                  test_post_nms_topk=self.test_post_nms_topk, nms_iou=self.nms_iou,
                  min_size=self.min_size, nms_method=self.nms_method,
                  nms_tile_size=self.nms_tile_size)
    return config
