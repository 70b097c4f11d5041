"""Inference post-processing: per-class decode, clip, score threshold, per-class NMS,
at most M detections per image, padded outputs plus a count. R (RoIs per image) must be
static."""

import keras
import tensorflow as tf

from faster_rcnn_tf import config
from faster_rcnn_tf import inputs
from faster_rcnn_tf.layers.box_geometry_layer import BoxGeometryLayer
from faster_rcnn_tf.ops import box_ops
from faster_rcnn_tf.ops import nms


NMS_METHODS = nms.METHODS


def resolve_nms_method(method):
  """`ops.nms.resolve_method`: 'auto' -> 'tiled' under XLA or when TensorFlow sees a GPU
  or TPU (where one kernel call per set costs more than the work, and XLA lowers the
  kernel to a slow loop), else 'kernel' (on CPUs TF's kernel does less arithmetic than
  the all-pairs IoU of the plain-ops form; `bench/bench_inference.py
  --nms_methods=kernel,batched` compares them, docs/performance.md has the figures)."""
  return nms.resolve_method(method)


def _per_class_nms(boxes, scores, max_detections, iou_threshold, score_threshold, method,
                   tile_size=nms.TILE_SIZE):
  """NMS of each class of each image (B * K sets, by `method`, an `ops.nms` method),
  then the top `max_detections` of each image over all classes.

  boxes float32 [B, R, K, 4] (R static), scores float32 [B, R, K] -> boxes [B, M, 4],
  scores [B, M], classes int32 [B, M] (1..K, 0 padding), count int32 [B].
  """
  num_images, num_rois, num_classes = tf.shape(boxes)[0], boxes.shape[1], boxes.shape[2]
  m = max_detections
  class_boxes = tf.reshape(tf.transpose(boxes, [0, 2, 1, 3]), [-1, num_rois, 4])
  class_scores = tf.reshape(tf.transpose(scores, [0, 2, 1]), [-1, num_rois])
  idx, n = nms.non_max_suppression(class_boxes, class_scores, m, iou_threshold,
                                   score_threshold, method=method, tile_size=tile_size)
  kept = tf.range(m)[tf.newaxis] < n[:, tf.newaxis]
  kept_scores = tf.where(kept, tf.gather(class_scores, idx, batch_dims=1), -1.0)  # [B*K, M]
  flat_scores = tf.reshape(kept_scores, [num_images, num_classes * m])
  top_scores, top = tf.math.top_k(flat_scores, k=m)  # [B, M]
  top_class = top // m
  top_roi = tf.gather(tf.reshape(idx, [num_images, num_classes * m]), top, batch_dims=1)
  keep = top_scores > -1.0
  det_boxes = tf.gather_nd(boxes, tf.stack([top_roi, top_class], axis=-1), batch_dims=1)
  det_boxes = tf.where(keep[..., tf.newaxis], det_boxes, 0.0)
  return (det_boxes, tf.where(keep, top_scores, 0.0),
          tf.where(keep, top_class + 1, 0), tf.reduce_sum(tf.cast(keep, tf.int32), axis=1))


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class DetectionGenerator(BoxGeometryLayer):
  """Turns head outputs into final detections.

  Call args:
    rois: float32 [B, R, 4]; roi_valid: bool [B, R]; class_probs: float [B, R, K + 1];
    box_deltas: float [B, R, 4 * (K + 1)] (normalized by `box_stds`); image_sizes [B, 2].
  Returns dict (see `inputs`): detection_boxes [B, M, 4] yxyx resized-image pixels,
    detection_scores [B, M], detection_classes int32 [B, M], num_detections int32 [B].
    Detections are sorted by score; padding entries are zero.

  nms_method: how the B * K per-class NMS problems run (`ops.nms`): 'kernel' (TF's
    NonMaxSuppressionV4, one problem after another), 'tiled' (all at once in plain ops;
    with R <= the tile size, one tile: the same as 'batched') or 'auto' (decided when
    traced: 'tiled' under XLA or if a GPU / TPU is visible). Same detections either way.
  nms_tile_size: boxes per tile of 'tiled'.
  """

  def __init__(self, score_threshold=0.05, nms_iou=config.DETECTION_NMS_IOU, max_detections=100,
               box_stds=box_ops.HEAD_BOX_STDS, nms_method='auto',
               nms_tile_size=nms.TILE_SIZE, **kwargs):
    super().__init__(**kwargs)
    self.score_threshold = score_threshold
    self.nms_iou = nms_iou
    self.max_detections = max_detections
    self.box_stds = tuple(box_stds)
    resolve_nms_method(nms_method)  # validates
    self.nms_method = nms_method
    self.nms_tile_size = int(nms_tile_size)

  def call(self, rois, roi_valid, class_probs, box_deltas, image_sizes):
    num_images, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    probs = tf.cast(class_probs, tf.float32)
    num_classes = probs.shape[-1] - 1
    deltas = tf.reshape(tf.cast(box_deltas, tf.float32),
                        [num_images, num_rois, num_classes + 1, 4])[:, :, 1:]
    boxes = box_ops.decode_boxes(deltas, rois[:, :, tf.newaxis], self.box_stds)
    boxes = tf.reshape(box_ops.clip_boxes(tf.reshape(boxes, [num_images, -1, 4]),
                                          image_sizes),
                       [num_images, num_rois, num_classes, 4])
    scores = tf.where(roi_valid[..., tf.newaxis], probs[:, :, 1:], 0.0)
    det_boxes, det_scores, det_classes, count = _per_class_nms(
        boxes, scores, self.max_detections, self.nms_iou, self.score_threshold,
        resolve_nms_method(self.nms_method), self.nms_tile_size)
    return {inputs.DETECTION_BOXES: det_boxes, inputs.DETECTION_SCORES: det_scores,
            inputs.DETECTION_CLASSES: det_classes, inputs.NUM_DETECTIONS: count}

  def get_config(self):
    config = super().get_config()
    config.update(score_threshold=self.score_threshold, nms_iou=self.nms_iou,
                  max_detections=self.max_detections, box_stds=self.box_stds,
                  nms_method=self.nms_method, nms_tile_size=self.nms_tile_size)
    return config
