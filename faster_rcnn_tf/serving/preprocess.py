"""Graph-side preprocessing of serving requests: decode, check, resize, pad (TF ops only).

Everything here is plain TensorFlow (no py_function), so it runs inside an exported
SavedModel under TF Serving. The resize is the training pipeline's (`data.transforms`):
shorter side -> min_size, longer side at most max_size, bilinear with half-pixel centres;
`tf.image.resize` is applied straight to the uint8 pixels, which gives bit-identical values
to resizing a float32 copy (checked) without the 4x memory of that copy.

Batches come out in the model's input format (`faster_rcnn_tf.inputs`): float32 pixels in
[0, 255], zero-padded at the bottom/right to a common size rounded up to `pad_multiple`
(as `data.pipeline.make_dataset` does), with each image's resized size.

Bad encoded images (not JPEG/PNG, truncated, corrupt, empty, zero-sized, more than
`max_pixels` pixels) are *dropped* by `images_from_bytes` and reported through the returned
indices: the export gives them zero detections. Image sizes are read from the file header
and checked before decoding, so a huge image (decompression bomb) is refused without
allocating its pixels.
"""

import tensorflow as tf

from faster_rcnn_tf.data import transforms

DEFAULT_PAD_MULTIPLE = 32
# 10000 x 10000: a 300 MB uint8 decode, the largest image accepted by default.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000

_JPEG_MAGIC = b'\xff\xd8\xff'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _big_endian_uint32(data, pos):
  """int64 []: the big-endian unsigned 32-bit integer at byte `pos` of string `data`."""
  raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, pos, 4), tf.uint8), tf.int64)
  raw = tf.ensure_shape(raw, [4])
  return ((raw[0] * 256 + raw[1]) * 256 + raw[2]) * 256 + raw[3]


def _fail(message):
  """An int64 [2] placeholder size that first raises InvalidArgumentError(message)."""
  check = tf.debugging.Assert(tf.constant(False), [message])
  with tf.control_dependencies([check]):
    return tf.zeros([2], tf.int64)


def header_size(data):
  """(height, width) int64 [2] of a JPEG or PNG read from its header, without decoding.

  Args:
    data: string scalar, the encoded image.
  Returns:
    int64 [2]. Raises InvalidArgumentError (when run) for anything that is not a JPEG or
    PNG, or whose header is truncated or corrupt.
  """
  is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), _JPEG_MAGIC)
  is_png = tf.equal(tf.strings.substr(data, 0, 8), _PNG_MAGIC)

  def jpeg():
    return tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int64)

  def png():
    check = tf.debugging.assert_greater_equal(
        tf.strings.length(data), 24, message='truncated PNG header')
    with tf.control_dependencies([check]):
      return tf.stack([_big_endian_uint32(data, 20), _big_endian_uint32(data, 16)])

  def other():
    return tf.cond(tf.equal(tf.strings.length(data), 0),
                   lambda: _fail('empty image string'),
                   lambda: _fail('not a JPEG or PNG image'))

  return tf.case([(is_jpeg, jpeg), (is_png, png)], default=other, exclusive=False)


def decode_image(data, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Decodes one JPEG or PNG to RGB after checking its header size.

  Args:
    data: string scalar, the encoded image (grayscale / RGBA / 16-bit PNGs become RGB
      uint8; EXIF orientation is not applied; for animated PNGs the first frame).
    max_pixels: images with more than this many pixels are refused.
  Returns:
    uint8 [H, W, 3]. Raises InvalidArgumentError (when run) for a bad image.
  """
  size = header_size(data)
  checks = [
      tf.debugging.assert_positive(size, message='image has zero height or width'),
      tf.debugging.assert_less_equal(
          size[0] * size[1], tf.constant(max_pixels, tf.int64),
          message=f'image has more than {max_pixels} pixels'),
  ]
  with tf.control_dependencies(checks):
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), _JPEG_MAGIC)
    image = tf.cond(is_jpeg,
                    lambda: tf.io.decode_jpeg(data, channels=3),
                    lambda: tf.io.decode_png(data, channels=3, dtype=tf.uint8))
  return tf.ensure_shape(image, [None, None, 3])


def resize_image(image, min_size, max_size):
  """uint8 [H, W, 3] -> (float32 [H', W', 3] in [0, 255], int32 [2] (H', W')).

  Same sizes and values as `transforms.resize_image_and_boxes` (the training pipeline).
  """
  shape = tf.shape(image)
  scale = transforms.compute_scale(shape[0], shape[1], min_size, max_size)
  size = transforms.compute_resized_size(shape[0], shape[1], scale)
  return tf.image.resize(image, size, method='bilinear'), size


def pad_to_multiple(images, multiple):
  """Zero-pads float [B, H, W, C] at the bottom/right to multiples of `multiple`."""
  if not multiple or multiple <= 1:
    return images
  shape = tf.shape(images)
  target = (shape[1:3] + multiple - 1) // multiple * multiple
  return tf.pad(images, [[0, 0], [0, target[0] - shape[1]], [0, target[1] - shape[2]],
                         [0, 0]])


def images_from_bytes(image_bytes, min_size, max_size, max_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                      pad_multiple=DEFAULT_PAD_MULTIPLE):
  """Decodes and resizes a batch of encoded images, dropping the ones that fail.

  Images are decoded one at a time and resized right away (inside a tf.data map), so at
  most one full-size decoded image is in memory at once. A failing image (any
  InvalidArgumentError while decoding it, see `decode_image`) is skipped.

  Args:
    image_bytes: string [N], encoded JPEG / PNG images (any sizes).
    min_size, max_size: resize targets (`transforms.compute_scale`).
    max_pixels: larger images count as failing.
    pad_multiple: padded height and width are multiples of this.
  Returns:
    dict with, for the V images that decoded (V <= N, in request order):
      index          int32 [V]              position of each in the request
      images         float32 [V, Hp, Wp, 3] resized pixels 0..255, zero-padded
      image_sizes    int32 [V, 2]           resized (height, width) before padding
      original_sizes int32 [V, 2]           decoded (height, width)
    and batch_size int32 [] (N).
  """
  image_bytes = tf.reshape(image_bytes, [-1])
  n = tf.shape(image_bytes)[0]

  def prepare(index, data):
    image = decode_image(data, max_pixels)
    resized, size = resize_image(image, min_size, max_size)
    return index, resized, size, tf.shape(image)[:2]

  ds = tf.data.Dataset.from_tensor_slices((tf.range(n), image_bytes))
  ds = ds.map(prepare).ignore_errors()
  # One image at a time, whatever tf.data's default rewrites become: memory stays at one
  # full-size decode plus the resized batch.
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = False
  options.experimental_optimization.inject_prefetch = False
  ds = ds.with_options(options)
  # A sentinel row keeps the batch non-empty when every image fails (or N = 0); it is
  # always last and removed below.
  sentinel = tf.data.Dataset.from_tensors(
      (tf.constant(-1), tf.zeros([1, 1, 3], tf.float32), tf.ones([2], tf.int32),
       tf.ones([2], tf.int32)))
  ds = ds.concatenate(sentinel).padded_batch(tf.cast(n + 1, tf.int64))
  index, images, sizes, originals = ds.get_single_element()
  return {
      'index': index[:-1],
      'images': pad_to_multiple(images[:-1], pad_multiple),
      'image_sizes': sizes[:-1],
      'original_sizes': originals[:-1],
      'batch_size': n,
  }


def images_from_uint8(images, min_size, max_size, pad_multiple=DEFAULT_PAD_MULTIPLE):
  """Resizes a batch of same-size uint8 images to the model's input.

  Args:
    images: uint8 [B, H, W, 3] RGB.
    min_size, max_size, pad_multiple: as in `images_from_bytes`.
  Returns:
    dict: images float32 [B, Hp, Wp, 3], image_sizes int32 [B, 2] (all equal),
    original_sizes int32 [B, 2]. Raises InvalidArgumentError (when run) if H or W is 0.
  """
  shape = tf.shape(images)
  check = tf.debugging.assert_positive(
      shape[1:3], message='images: height and width must be at least 1')
  with tf.control_dependencies([check]):
    scale = transforms.compute_scale(shape[1], shape[2], min_size, max_size)
    size = transforms.compute_resized_size(shape[1], shape[2], scale)
  resized = tf.image.resize(images, size, method='bilinear')
  batch = shape[0]
  return {
      'images': pad_to_multiple(resized, pad_multiple),
      'image_sizes': tf.tile(size[tf.newaxis], [batch, 1]),
      'original_sizes': tf.tile(shape[tf.newaxis, 1:3], [batch, 1]),
  }
