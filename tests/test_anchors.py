"""Tests of faster_rcnn_tf.ops.anchors."""

import numpy as np

from faster_rcnn_tf.ops import anchors

# The classic py-faster-rcnn table, inclusive pixel corners (x1, y1, x2, y2).
CLASSIC_XYXY_INCLUSIVE = np.array([
    [-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
    [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
    [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]], np.float64)


def _classic_in_project_convention():
  x1, y1, x2, y2 = CLASSIC_XYXY_INCLUSIVE.T
  return np.stack([y1, x1, y2 + 1, x2 + 1], axis=1)


def test_classic_base_anchors_exact():
  base = anchors.generate_base_anchors(16, (0.5, 1.0, 2.0), (8, 16, 32))
  assert base.shape == (9, 4)
  assert base.dtype == np.float32
  np.testing.assert_array_equal(base, _classic_in_project_convention())
  # Every base anchor is centred on (8, 8).
  np.testing.assert_array_equal((base[:, 0] + base[:, 2]) / 2, np.full(9, 8.0))
  np.testing.assert_array_equal((base[:, 1] + base[:, 3]) / 2, np.full(9, 8.0))


def test_default_arguments_are_the_classic_set():
  np.testing.assert_array_equal(anchors.generate_base_anchors(),
                                _classic_in_project_convention())


def test_small_scales_base_anchors():
  base = anchors.generate_base_anchors(16, (0.5, 1.0, 2.0), (1, 2, 4))
  # Ratio 0.5: w = round(sqrt(512)) = 23, h = round(11.5) = 12; ratio 1: 16x16; 2: 11 x 22.
  sizes = np.stack([base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]], axis=1)
  want = np.array([[12, 23], [24, 46], [48, 92], [16, 16], [32, 32], [64, 64],
                   [22, 11], [44, 22], [88, 44]], np.float32)
  np.testing.assert_array_equal(sizes, want)


def test_tile_anchors_38x50():
  base = anchors.generate_base_anchors()
  tiled = anchors.tile_anchors(base, 38, 50, stride=16).numpy()
  assert tiled.shape == (17100, 4)
  grid = tiled.reshape(38, 50, 9, 4)
  cy = (grid[..., 0] + grid[..., 2]) / 2
  cx = (grid[..., 1] + grid[..., 3]) / 2
  i = np.arange(38)[:, None, None]
  j = np.arange(50)[None, :, None]
  np.testing.assert_array_equal(cy, np.broadcast_to(16 * i + 8, cy.shape))
  np.testing.assert_array_equal(cx, np.broadcast_to(16 * j + 8, cx.shape))
  # (row, column, anchor) order: anchor k of cell (i, j) is the base anchor k shifted.
  for (r, c, k) in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (37, 49, 8), (5, 7, 4), (20, 3, 6)]:
    idx = (r * 50 + c) * 9 + k
    np.testing.assert_array_equal(tiled[idx], base[k] + np.array([16 * r, 16 * c] * 2))


def test_tile_anchors_other_stride_and_tensor_sizes():
  import tensorflow as tf
  base = anchors.generate_base_anchors(8, (1.0,), (2,))
  tiled = anchors.tile_anchors(base, tf.constant(3), tf.constant(2), stride=8).numpy()
  want = [[4 - 8 + 8 * r, 4 - 8 + 8 * c, 4 + 8 + 8 * r, 4 + 8 + 8 * c]
          for r in range(3) for c in range(2)]
  np.testing.assert_array_equal(tiled, np.array(want, np.float32))
