"""Resize math and box/pixel alignment of resize and flip."""

import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf.data import transforms


@pytest.mark.parametrize('height, width, min_size, max_size, scale, size', [
    (480, 640, 600, 1000, 1.25, (600, 800)),            # shorter side -> 600
    (1333, 2000, 600, 1000, 600 / 1333, (600, 900)),   # downscale, shorter side -> 600
    (500, 1000, 600, 1000, 1.0, (500, 1000)),          # longer side capped at 1000
    (100, 1000, 600, 1000, 1.0, (100, 1000)),          # cap wins over the upscale
    (640, 480, 600, 1000, 1.25, (800, 600)),           # portrait
    (128, 128, 600, 1000, 600 / 128, (600, 600)),
    (375, 500, 600, 1000, 1.6, (600, 800)),
])
def test_compute_scale_and_size(height, width, min_size, max_size, scale, size):
  got = transforms.compute_scale(height, width, min_size, max_size)
  assert got.dtype == tf.float32
  assert float(got) == pytest.approx(scale, rel=1e-6)
  np.testing.assert_array_equal(transforms.compute_resized_size(height, width, got), size)
  # also works with tensor inputs of another dtype (as in the serving graph)
  got = transforms.compute_scale(tf.constant(height, tf.int64), tf.constant(width, tf.int64),
                                 min_size, max_size)
  assert float(got) == pytest.approx(scale, rel=1e-6)


def outline_image(height, width, box):
  """uint8 image, black with a 1-pixel white outline on the pixels just inside `box`."""
  ymin, xmin, ymax, xmax = box
  image = np.zeros((height, width, 3), np.uint8)
  image[ymin, xmin:xmax] = 255
  image[ymax - 1, xmin:xmax] = 255
  image[ymin:ymax, xmin] = 255
  image[ymin:ymax, xmax - 1] = 255
  return image


def bright_extent(image, threshold=127.5):
  """yxyx continuous extent of pixels brighter than threshold (channel 0)."""
  mask = np.asarray(image)[..., 0] > threshold
  rows = np.flatnonzero(mask.any(axis=1))
  cols = np.flatnonzero(mask.any(axis=0))
  return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.float32)


BOX = (10, 20, 30, 61)  # asymmetric in a 50 x 80 image, so a flip moves it


def test_outline_helper():
  np.testing.assert_array_equal(bright_extent(outline_image(50, 80, BOX)), BOX)


@pytest.mark.parametrize('min_size, exact', [(100, True), (200, True), (69, False)])
def test_resize_keeps_box_on_its_pixels(min_size, exact):
  image = outline_image(50, 80, BOX)
  resized, boxes, scale, size = transforms.resize_image_and_boxes(
      tf.constant(image), tf.constant([BOX], tf.float32), min_size, 1000)
  assert resized.dtype == tf.float32
  np.testing.assert_array_equal(size, resized.shape[:2])
  assert float(scale) == pytest.approx(min_size / 50)
  extent = bright_extent(resized.numpy())
  # independent expectation: the box scaled by the size ratios
  expected = np.array(BOX, np.float32) * np.tile(np.array(size) / np.array([50, 80]), 2)
  np.testing.assert_allclose(boxes.numpy()[0], expected, rtol=1e-6)
  if exact:  # integer factors: the bright band starts/ends exactly on the box edges
    np.testing.assert_array_equal(extent, boxes.numpy()[0])
  else:
    np.testing.assert_allclose(extent, boxes.numpy()[0], atol=1.0)


def test_flip_keeps_box_on_its_pixels():
  image = outline_image(50, 80, BOX)
  flipped, boxes = transforms.flip_left_right(tf.constant(image), tf.constant([BOX], tf.float32))
  np.testing.assert_array_equal(boxes.numpy()[0], [10, 80 - 61, 30, 80 - 20])
  np.testing.assert_array_equal(bright_extent(flipped.numpy()), boxes.numpy()[0])
  np.testing.assert_array_equal(flipped.numpy(), image[:, ::-1])


def test_empty_boxes():
  image = tf.zeros([30, 40, 3], tf.uint8)
  resized, boxes, _, _ = transforms.resize_image_and_boxes(image, tf.zeros([0, 4]), 60, 100)
  assert boxes.shape == (0, 4) and resized.shape == (60, 80, 3)
  _, boxes = transforms.flip_left_right(image, tf.zeros([0, 4]))
  assert boxes.shape == (0, 4)
