"""Multi-scale training, photometric distortion and scale jitter with crop (data.augment and
their use in data.pipeline), checked on images whose pixels show where the box is."""

import colorsys

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf import inputs
from faster_rcnn_tf.data import augment
from faster_rcnn_tf.data import pipeline
from faster_rcnn_tf.data import records
from faster_rcnn_tf.data.source import InMemorySource
from tests.test_data_transforms import BOX, bright_extent, outline_image

SIZES = (100, 150, 200, 69)  # 2x, 3x, 4x the 50-pixel side, and an inexact factor


def _outline_source(n, height=50, width=80, box=BOX):
  recs = [records.make_record(outline_image(height, width, box), [box], [1], None, i)
          for i in range(n)]
  return InMemorySource(recs, ['a'])


def _batches(ds, n):
  return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def test_multi_scale_draws_every_size_one_per_batch_boxes_on_pixels():
  ds = pipeline.make_dataset(_outline_source(6), training=True, batch_size=3, min_size=SIZES,
                             max_size=1000, max_boxes=2, flip=False, pad_multiple=1)
  seen = set()
  for b in _batches(ds, 24):
    shorts = b[inputs.IMAGE_SIZES].min(axis=1)
    assert len(set(shorts)) == 1, shorts  # one size per batch
    short = int(shorts[0])
    assert short in SIZES
    seen.add(short)
    for i in range(3):
      h, w = b[inputs.IMAGE_SIZES][i]
      # The size follows the shorter side drawn (an independent rounding of 80 * s / 50).
      assert (h, w) == (short, round(80 * short / 50))
      box = b[inputs.GT_BOXES][i, 0]
      want = np.array(BOX, np.float32) * np.array([h / 50, w / 80, h / 50, w / 80])
      np.testing.assert_allclose(box, want, rtol=1e-6)
      extent = bright_extent(b[inputs.IMAGES][i, :h, :w])
      if short % 50 == 0:  # integer factor: the outline's band sits exactly on the box
        np.testing.assert_array_equal(extent, box)
      else:
        assert np.abs(extent - box).max() <= 1.0
  assert seen == set(SIZES)


def test_multi_scale_batches_mixed_shapes_with_padding():
  recs = [records.make_record(outline_image(50, 80, BOX), [BOX], [1], None, 0),
          records.make_record(outline_image(80, 50, (20, 10, 61, 30)), [(20, 10, 61, 30)],
                              [1], None, 1)]
  ds = pipeline.make_dataset(InMemorySource(recs, ['a']), training=True, batch_size=2,
                             min_size=(100, 150), max_size=1000, max_boxes=2, flip=False,
                             shuffle_seed=None, pad_multiple=32)
  shapes = set()
  for b in _batches(ds, 8):
    short = int(b[inputs.IMAGE_SIZES].min())
    sizes = [tuple(s) for s in b[inputs.IMAGE_SIZES]]
    assert sizes == [(short, short * 8 // 5), (short * 8 // 5, short)]
    padded = b[inputs.IMAGES].shape[1:3]
    assert padded == tuple(-(-short * 8 // 5 // 32) * 32 for _ in range(2))
    shapes.add(padded)
    for i, (h, w) in enumerate(sizes):
      assert not b[inputs.IMAGES][i, h:].any() and not b[inputs.IMAGES][i, :, w:].any()
      np.testing.assert_array_equal(bright_extent(b[inputs.IMAGES][i, :h, :w]),
                                    b[inputs.GT_BOXES][i, 0])
  assert shapes == {(160, 160), (256, 256)}  # both sizes drawn: 160 and 240 -> 256


def test_evaluation_uses_the_largest_size():
  ds = pipeline.make_dataset(_outline_source(2), training=False, batch_size=2,
                             min_size=(100, 200, 150), max_size=1000, max_boxes=2)
  (b,) = _batches(ds, 1)
  np.testing.assert_array_equal(b[inputs.IMAGE_SIZES], [[200, 320], [200, 320]])


def _pixels(seed, shape=(6, 7, 3)):
  return np.random.default_rng(seed).uniform(40, 215, shape).astype(np.float32)


def test_brightness_adds_one_value_within_its_range():
  image = _pixels(0)
  deltas = []
  for s in range(8):
    out = augment.photometric_distort(tf.constant(image), tf.constant([s, 1]),
                                      brightness=0.1).numpy()
    delta = out - image
    np.testing.assert_allclose(delta, delta.flat[0], atol=1e-3)
    assert abs(delta.flat[0]) <= 0.1 * 255 + 1e-3
    deltas.append(delta.flat[0])
  assert np.ptp(deltas) > 1.0  # different seeds, different values
  again = augment.photometric_distort(tf.constant(image), tf.constant([3, 1]), brightness=0.1)
  np.testing.assert_allclose(again.numpy() - image, deltas[3], atol=1e-3)  # reproducible


def test_contrast_scales_distances_to_each_channel_mean():
  image = np.random.default_rng(1).uniform(100, 150, (6, 7, 3)).astype(np.float32)
  out = augment.photometric_distort(tf.constant(image), tf.constant([5, 2]),
                                    contrast=0.3).numpy()
  mean = image.mean(axis=(0, 1))
  factor = (out - mean) / (image - mean)
  np.testing.assert_allclose(factor, factor.flat[0], rtol=1e-3, atol=1e-3)
  assert 0.7 <= factor.flat[0] <= 1.3


def _hsv(image):
  return np.array([colorsys.rgb_to_hsv(*(p / 255.0)) for p in image.reshape(-1, 3)])


def test_saturation_and_hue_against_colorsys():
  # Saturation under 0.45, so a factor up to 1.4 is never capped at 1.
  image = np.random.default_rng(2).uniform(120, 215, (6, 7, 3)).astype(np.float32)
  before = _hsv(image)
  sat = augment.photometric_distort(tf.constant(image), tf.constant([7, 3]),
                                    saturation=0.4).numpy()
  after = _hsv(sat)
  ratio = after[:, 1] / before[:, 1]
  np.testing.assert_allclose(ratio, ratio[0], rtol=1e-3)
  assert 0.6 <= ratio[0] <= 1.4
  np.testing.assert_allclose(after[:, 2], before[:, 2], atol=1e-4)  # value unchanged
  hue = augment.photometric_distort(tf.constant(image), tf.constant([7, 4]), hue=0.1).numpy()
  after = _hsv(hue)
  shift = (after[:, 0] - before[:, 0] + 0.5) % 1.0 - 0.5
  np.testing.assert_allclose(shift, shift[0], atol=2e-3)
  assert 0.0 < abs(shift[0]) <= 0.1 + 2e-3
  np.testing.assert_allclose(after[:, 2], before[:, 2], atol=1e-4)


@pytest.mark.parametrize('name,value', [('brightness', -0.1), ('hue', 0.6),
                                        ('contrast', 1.5)])
def test_bad_strength_names_the_flag(name, value):
  with pytest.raises(ValueError, match=f'--{name}'):
    augment.photometric_distort(tf.zeros([2, 2, 3]), tf.constant([0, 0]), **{name: value})


def test_scale_jitter_crop_keeps_boxes_on_their_pixels():
  # A filled rectangle, so any part left in the crop shows where the clipped box is.
  image = np.zeros((50, 80, 3), np.uint8)
  image[10:30, 20:61] = 255
  factors = []
  for s in range(30):
    out, boxes, keep, scale, size = augment.jitter_resize_and_crop(
        tf.constant(image), tf.constant([BOX], tf.float32), 100, 1000, 0.5, 2.0,
        tf.constant([s, 9]))
    out, boxes, keep, size = out.numpy(), boxes.numpy(), keep.numpy(), size.numpy()
    factor = float(scale) / 2.0  # the usual scale is 100 / 50
    factors.append(factor)
    assert 0.5 <= factor <= 2.0
    assert tuple(out.shape[:2]) == tuple(size)
    # The window is the jittered image, cut to at most the usual 100x160.
    np.testing.assert_array_equal(size, np.minimum(np.round(np.array([50, 80]) * 2 * factor),
                                                   [100, 160]))
    if keep[0]:
      extent = bright_extent(out)
      assert np.abs(extent - boxes[0]).max() <= 1.0, (s, extent, boxes[0])
    else:  # the box was cut to under a pixel: nothing of it is left in the window
      assert not (out[..., 0] > 200).any()
  assert min(factors) < 0.8 and max(factors) > 1.5


def test_pipeline_scale_jitter_drops_classes_with_their_boxes():
  # Class 1 fills the top-left quarter, class 2 the bottom-right one: after the crop a kept
  # class-1 box still starts at the window's top-left corner and a class-2 box ends at its
  # bottom-right corner, so each row's class can be told from its box.
  image = np.zeros((50, 80, 3), np.uint8)
  rec = records.make_record(image, [(0, 0, 25, 40), (25, 40, 50, 80)], [1, 2], None, 0)
  ds = pipeline.make_dataset(InMemorySource([rec], ['a', 'b']), training=True, batch_size=1,
                             min_size=100, max_size=1000, max_boxes=3, flip=False,
                             scale_jitter=(1.5, 2.5), pad_multiple=1)
  kept = set()
  for b in _batches(ds, 30):
    classes = b[inputs.GT_CLASSES][0]
    n = int((classes > 0).sum())
    h, w = b[inputs.IMAGE_SIZES][0]
    assert (h, w) == (100, 160)  # factors above 1: always the usual size, cropped
    assert not b[inputs.GT_BOXES][0, n:].any() and not classes[n:].any()
    for box, cls in zip(b[inputs.GT_BOXES][0, :n], classes[:n]):
      assert box[2] - box[0] >= 1 and box[3] - box[1] >= 1
      assert (box >= 0).all() and box[2] <= h and box[3] <= w
      if cls == 1:
        assert box[0] == 0 and box[1] == 0, box
      else:
        assert cls == 2 and box[2] == h and box[3] == w, box
    kept.add(tuple(classes[:n]))
  assert (1, 2) in kept and ((1,) in kept or (2,) in kept)
