"""Inference post-processing: per-class decode, clip, score threshold, per-class NMS,
at most M detections per image, padded outputs plus a count."""

import keras
import tensorflow as tf

from faster_rcnn_tf import inputs
from faster_rcnn_tf.ops import box_ops


def _per_class_nms(boxes, scores, max_detections, iou_threshold, score_threshold):
  """NMS of each class of one image, then the top `max_detections` over all classes.

  boxes [R, K, 4], scores [R, K] -> boxes [M, 4], scores [M], classes int32 [M] (1..K,
  0 padding), count int32 [].
  """
  num_classes = tf.shape(scores)[1]

  def one_class(c):
    cls_scores = scores[:, c]
    idx, n = tf.raw_ops.NonMaxSuppressionV4(
        boxes=boxes[:, c], scores=cls_scores, max_output_size=max_detections,
        iou_threshold=iou_threshold, score_threshold=score_threshold,
        pad_to_max_output_size=True)
    keep = tf.range(max_detections) < n
    return tf.where(keep, tf.gather(cls_scores, idx), -1.0), idx

  cls_scores, cls_idx = tf.map_fn(
      one_class, tf.range(num_classes),
      fn_output_signature=(tf.TensorSpec([max_detections], tf.float32),
                           tf.TensorSpec([max_detections], tf.int32)))  # [K, M]
  flat_scores = tf.reshape(cls_scores, [-1])
  top_scores, top = tf.math.top_k(flat_scores, k=max_detections)
  top_class = top // max_detections
  top_roi = tf.gather(tf.reshape(cls_idx, [-1]), top)
  keep = top_scores > -1.0
  det_boxes = tf.gather_nd(boxes, tf.stack([top_roi, top_class], axis=1))
  det_boxes = tf.where(keep[:, tf.newaxis], det_boxes, 0.0)
  return (det_boxes, tf.where(keep, top_scores, 0.0),
          tf.where(keep, top_class + 1, 0), tf.reduce_sum(tf.cast(keep, tf.int32)))


class DetectionGenerator(keras.layers.Layer):
  """Turns head outputs into final detections.

  Call args:
    rois: float32 [B, R, 4]; roi_valid: bool [B, R]; class_probs: float [B, R, K + 1];
    box_deltas: float [B, R, 4 * (K + 1)] (normalized by `box_stds`); image_sizes [B, 2].
  Returns dict (see `inputs`): detection_boxes [B, M, 4] yxyx resized-image pixels,
    detection_scores [B, M], detection_classes int32 [B, M], num_detections int32 [B].
    Detections are sorted by score; padding entries are zero.
  """

  def __init__(self, score_threshold=0.05, nms_iou=0.3, max_detections=100,
               box_stds=box_ops.HEAD_BOX_STDS, **kwargs):
    # Box geometry stays float32 under a mixed_float16 policy (coordinates of ~1000 px
    # in float16 are off by up to half a pixel); float16 inputs are cast up.
    kwargs.setdefault('dtype', 'float32')
    super().__init__(**kwargs)
    self.score_threshold = score_threshold
    self.nms_iou = nms_iou
    self.max_detections = max_detections
    self.box_stds = tuple(box_stds)

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
    m = self.max_detections
    det_boxes, det_scores, det_classes, count = tf.map_fn(
        lambda a: _per_class_nms(a[0], a[1], m, self.nms_iou, self.score_threshold),
        (boxes, scores),
        fn_output_signature=(tf.TensorSpec([m, 4], tf.float32),
                             tf.TensorSpec([m], tf.float32),
                             tf.TensorSpec([m], tf.int32), tf.TensorSpec([], tf.int32)))
    return {inputs.DETECTION_BOXES: det_boxes, inputs.DETECTION_SCORES: det_scores,
            inputs.DETECTION_CLASSES: det_classes, inputs.NUM_DETECTIONS: count}

  def get_config(self):
    config = super().get_config()
    config.update(score_threshold=self.score_threshold, nms_iou=self.nms_iou,
                  max_detections=self.max_detections, box_stds=self.box_stds)
    return config
