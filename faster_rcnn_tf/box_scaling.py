"""The one mapping of boxes between sizes of the same images.

The model's detections are in resized-image pixels; evaluation results, export outputs
and the detector speak of original-image pixels or normalized coordinates (size (1, 1)).
Every consumer maps through `rescale_boxes`. Importing this module loads no TensorFlow:
evaluation code that scores results files uses it on numpy arrays.
"""

import numpy as np


def _is_numpy(*values):
  return all(isinstance(v, (np.ndarray, list, tuple, int, float, np.generic))
             for v in values)


def rescale_boxes(boxes, from_sizes, to_sizes, clip=True):
  """Maps yxyx boxes from images of `from_sizes` to the same images at `to_sizes`.

  Args:
    boxes: float [B, M, 4] yxyx, continuous pixels of images of (height, width)
      `from_sizes`; any float dtype (float64 stays float64); numpy or tensors.
    from_sizes, to_sizes: [B, 2] (height, width), any numeric dtype.
    clip: clip the result to [0, height] x [0, width] of `to_sizes`.
  Returns:
    numpy in, numpy out (float boxes keep their dtype, others become float64); a tensor
    otherwise (plain TF ops: eager, or inside a graph such as the serving signatures).
    Coordinates are divided by the from size and multiplied by the to size, per axis
    (division first, so (1, 1) targets give exactly boxes / size).
  """
  if _is_numpy(boxes, from_sizes, to_sizes):
    boxes = np.asarray(boxes)
    if not np.issubdtype(boxes.dtype, np.floating):
      boxes = boxes.astype(np.float64)
    dtype = boxes.dtype
    from_yxyx = np.tile(np.asarray(from_sizes, dtype).reshape(-1, 2), [1, 2])[:, None, :]
    to_yxyx = np.tile(np.asarray(to_sizes, dtype).reshape(-1, 2), [1, 2])[:, None, :]
    rescaled = boxes / from_yxyx * to_yxyx
    return np.clip(rescaled, np.zeros_like(to_yxyx), to_yxyx) if clip else rescaled
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from faster_rcnn_tf.ops import box_ops  # pylint: disable=g-import-not-at-top
  boxes = tf.convert_to_tensor(boxes)
  from_sizes = tf.cast(from_sizes, boxes.dtype)
  to_sizes = tf.cast(to_sizes, boxes.dtype)
  rescaled = (boxes / tf.tile(from_sizes, [1, 2])[:, tf.newaxis, :]
              * tf.tile(to_sizes, [1, 2])[:, tf.newaxis, :])
  return box_ops.clip_boxes(rescaled, to_sizes) if clip else rescaled
