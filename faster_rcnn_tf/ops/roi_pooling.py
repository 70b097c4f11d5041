"""Crop pooling of RoIs on a feature map: bilinear crops, optionally max-pooled.

`crop_and_resize` below computes exactly what `tf.image.crop_and_resize` computes
(bilinear sampling at crop_size points spanning the box, corners included, 0 outside the
map), written with gathers so that it also compiles with XLA, which has no kernel for
CropAndResize.

Feature cell (i, j) of a stride-s map is centred on image pixel coordinates
(s * i + s / 2, s * j + s / 2) (continuous convention, see `box_ops`), so an image
coordinate y maps to the fractional cell index y / s - 0.5.

`forced_impl('gather')` makes every `crop_pool(impl='auto')` traced inside it take the
gather form: exports to runtimes that have no CropAndResize kernel (TFLite builtins,
ONNX) trace the model under it.
"""

import contextlib
import threading

import tensorflow as tf

from faster_rcnn_tf.ops import xla_context

IMPLS = ('gather', 'native')
_STATE = threading.local()  # .forced_impl: see forced_impl


@contextlib.contextmanager
def forced_impl(impl):
  """Within it (per thread, nests), `crop_pool(impl='auto')` means `impl`."""
  if impl not in IMPLS:
    raise ValueError(f'forced_impl: impl must be one of {IMPLS}, got {impl!r}')
  previous = getattr(_STATE, 'forced_impl', None)
  _STATE.forced_impl = impl
  try:
    yield
  finally:
    _STATE.forced_impl = previous


def crop_and_resize(features, boxes, box_indices, crop_size):
  """Bilinear crops, same semantics as `tf.image.crop_and_resize`.

  Args:
    features: float [B, H, W, C].
    boxes: float32 [K, 4] yxyx normalized so that 0 is the first and 1 the last cell.
    box_indices: int32 [K], the image of each box.
    crop_size: static int S.
  Returns:
    [K, S, S, C] in the features' dtype.
  """
  shape = tf.shape(features)
  height, width, channels = shape[1], shape[2], shape[3]
  hm1 = tf.cast(height - 1, tf.float32)
  wm1 = tf.cast(width - 1, tf.float32)
  boxes = tf.cast(boxes, tf.float32)
  if crop_size > 1:
    steps = tf.range(crop_size, dtype=tf.float32)[tf.newaxis, :] / (crop_size - 1)
    ys = boxes[:, 0:1] * hm1 + steps * ((boxes[:, 2:3] - boxes[:, 0:1]) * hm1)
    xs = boxes[:, 1:2] * wm1 + steps * ((boxes[:, 3:4] - boxes[:, 1:2]) * wm1)
  else:
    ys = 0.5 * (boxes[:, 0:1] + boxes[:, 2:3]) * hm1
    xs = 0.5 * (boxes[:, 1:2] + boxes[:, 3:4]) * wm1
  valid_y = (ys >= 0.0) & (ys <= hm1)  # [K, S]
  valid_x = (xs >= 0.0) & (xs <= wm1)
  y0f = tf.floor(ys)
  x0f = tf.floor(xs)
  wy = (ys - y0f)[:, :, tf.newaxis, tf.newaxis]
  wx = (xs - x0f)[:, tf.newaxis, :, tf.newaxis]
  y0 = tf.clip_by_value(tf.cast(y0f, tf.int32), 0, height - 1)
  x0 = tf.clip_by_value(tf.cast(x0f, tf.int32), 0, width - 1)
  y1 = tf.minimum(y0 + 1, height - 1)
  x1 = tf.minimum(x0 + 1, width - 1)
  flat = tf.reshape(features, [-1, channels])
  base = (tf.cast(box_indices, tf.int32) * height * width)[:, tf.newaxis, tf.newaxis]

  def gather(yi, xi):
    idx = base + yi[:, :, tf.newaxis] * width + xi[:, tf.newaxis, :]  # [K, S, S]
    return tf.cast(tf.gather(flat, idx), tf.float32)

  top_left, top_right = gather(y0, x0), gather(y0, x1)
  bottom_left, bottom_right = gather(y1, x0), gather(y1, x1)
  top = top_left + (top_right - top_left) * wx
  bottom = bottom_left + (bottom_right - bottom_left) * wx
  crops = top + (bottom - top) * wy
  valid = (valid_y[:, :, tf.newaxis] & valid_x[:, tf.newaxis, :])[..., tf.newaxis]
  return tf.cast(tf.where(valid, crops, 0.0), features.dtype)


def crop_pool(features, rois, stride, crop_size=7, max_pool=True, impl='auto'):
  """Crops every RoI of every image to a fixed grid.

  Args:
    features: [B, Hf, Wf, C] feature map (any float dtype).
    rois: float32 [B, R, 4] yxyx boxes in image pixels.
    stride: feature stride in pixels.
    crop_size: output side. With max_pool=True the RoI is sampled at 2 * crop_size and
      2x2 max-pooled (the VGG16 recipe: 14x14 -> 7x7); with False it is sampled directly
      at crop_size (the ResNet recipe).
    max_pool: see crop_size.
    impl: 'gather' (`crop_and_resize` above: compiles with XLA, and is fast there),
      'native' (`tf.image.crop_and_resize`: the same numbers, several times faster
      without XLA, but XLA cannot compile it) or 'auto' (the `forced_impl` in effect, else
      gather inside XLA, else native).
  Returns:
    [B * R, crop_size, crop_size, C], RoIs of image 0 first; same dtype as features.
  """
  shape = tf.shape(features)
  num_images, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
  hf = tf.cast(shape[1], tf.float32)
  wf = tf.cast(shape[2], tf.float32)
  rois = tf.stop_gradient(tf.cast(rois, tf.float32))
  scale = tf.stack([tf.maximum(hf - 1.0, 1.0), tf.maximum(wf - 1.0, 1.0)] * 2)
  boxes = tf.reshape((rois / stride - 0.5) / scale, [-1, 4])
  box_indices = tf.repeat(tf.range(num_images), num_rois)
  size = crop_size * 2 if max_pool else crop_size
  if impl == 'auto':
    impl = getattr(_STATE, 'forced_impl', None)
  if impl is None:
    # Unknown: gather, which works everywhere.
    impl = 'gather' if xla_context.in_xla_compilation(if_unknown=True) else 'native'
  if impl == 'native':
    image = features  # the kernel takes float16 / float32 but not bfloat16
    if features.dtype == tf.bfloat16:
      image = tf.cast(features, tf.float32)
    crops = tf.image.crop_and_resize(image, boxes, box_indices, [size, size])
    crops = tf.cast(crops, features.dtype)
  elif impl == 'gather':
    crops = crop_and_resize(features, boxes, box_indices, size)
  else:
    raise ValueError(f"crop_pool: impl must be 'gather' or 'native', got {impl!r}")
  if max_pool:
    crops = tf.nn.max_pool2d(crops, ksize=2, strides=2, padding='SAME')
  return crops
