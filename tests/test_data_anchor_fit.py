"""data.anchor_fit: IoU of shapes, anchor recall (centred and on the real grid) and the
k-means fits, on hand-made boxes with hand-computed answers."""

import numpy as np
import pytest

from faster_rcnn_tf.data import anchor_fit as F


def test_shape_iou_by_hand():
  got = F.shape_iou([[10, 10], [16, 8]], [[5, 20], [16, 16]])
  # 10x10 vs 5x20: 5 * 10 = 50 shared of 100 + 100 - 50; 16x8 inside 16x16: 128 / 256.
  np.testing.assert_allclose(got, [[50 / 150, 100 / 256], [(5 * 8) / (128 + 100 - 40), 0.5]])


def _centred_box(cy, cx, h, w):
  return [cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2]


def test_recall_centred_and_on_the_grid_by_hand():
  # One 16x16 anchor (base 16, scale 1, ratio 1) tiled at stride 16 over a 64x64 image:
  # centres at 8, 24, 40, 56.
  boxes = np.array([
      _centred_box(24, 24, 16, 16),  # IoU 1
      _centred_box(24, 40, 16, 8),   # 128 / 256 = 0.5
      _centred_box(40, 24, 20, 20),  # 256 / 400 = 0.64
      _centred_box(40, 40, 14, 14),  # 196 / 256 = 0.766
      _centred_box(32, 32, 32, 32),  # 256 / 1024 = 0.25 (any neighbour: the same)
      _centred_box(16, 16, 16, 16),  # centred: 1; grid: offset 8, 8 -> 64 / 448
  ])
  resized = [(np.array([64, 64]), boxes)]
  report = F.anchor_report(resized, 16, (1.0,), (1.0,), 16)
  np.testing.assert_allclose(list(report['recall_centred'].values()),
                             [round(5 / 6, 4), round(3 / 6, 4)])
  np.testing.assert_allclose(list(report['recall_grid'].values()),
                             [round(4 / 6, 4), round(2 / 6, 4)])
  want_grid = np.array([1.0, 0.5, 0.64, 196 / 256, 0.25, 64 / 448])
  np.testing.assert_allclose(F.best_grid_iou(resized, 16, (1.0,), (1.0,), 16), want_grid)
  assert report['mean_best_iou_grid'] == pytest.approx(want_grid.mean(), abs=1e-4)


def test_grid_recall_leaves_out_anchors_crossing_the_border():
  # A 32x32 box in the top-left corner: the 32x32 anchor centred on it (8, 8) would cross
  # the border; the nearest one inside is centred at (16 + 8) in each axis only if it fits:
  # 32x32 anchors centred on 24 span [8, 40]; IoU with [0, 32]: 24 * 24 / (2048 - 576).
  resized = [(np.array([48, 48]), np.array([[0.0, 0.0, 32.0, 32.0]]))]
  got = F.best_grid_iou(resized, 16, (2.0,), (1.0,), 16)
  np.testing.assert_allclose(got, [24 * 24 / (2 * 1024 - 24 * 24)])


def test_kmeans_iou_finds_three_hand_made_groups():
  rng = np.random.default_rng(0)
  groups = [np.array([10.0, 10.0]), np.array([30.0, 15.0]), np.array([60.0, 60.0])]
  shapes = np.concatenate([g * rng.uniform(0.95, 1.05, (40, 2)) for g in groups])
  centres = F.kmeans_iou(shapes, 3, seed=1)
  want = np.array([np.median(shapes[i * 40:(i + 1) * 40], axis=0) for i in range(3)])
  np.testing.assert_allclose(centres, want)


def test_fit_grid_recovers_exact_scales_and_ratios():
  scales, ratios, base = (2.0, 5.0), (0.5, 2.0), 8
  shapes = np.array([[base * s * np.sqrt(r), base * s / np.sqrt(r)]
                     for s in scales for r in ratios for _ in range(5)])
  got_s, got_r = F.fit_grid(shapes, base, (2.5, 4.0), (0.7, 1.6))
  np.testing.assert_allclose(got_s, scales, rtol=1e-9)
  np.testing.assert_allclose(got_r, ratios, rtol=1e-9)
  # Fixed ratios: only the scales move.
  got_s, got_r = F.fit_grid(shapes, base, (2.5, 4.0), (0.5, 2.0), fit_ratios=False)
  np.testing.assert_allclose(got_s, scales, rtol=1e-9)
  np.testing.assert_array_equal(got_r, (0.5, 2.0))


def test_auto_is_at_least_the_configured_recall():
  rng = np.random.default_rng(3)
  sizes = np.exp(rng.normal(np.log(40), 0.4, 300))
  ratios = np.exp(rng.normal(0.0, 0.25, 300))
  h, w = sizes * np.sqrt(ratios), sizes / np.sqrt(ratios)
  cy, cx = rng.uniform(40, 200, 300), rng.uniform(40, 280, 300)
  boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)
  resized = [(np.array([240, 320]), boxes[i:i + 30]) for i in range(0, 300, 30)]
  configured = ((8.0, 16.0, 32.0), (0.5, 1.0, 2.0))
  ref = F.anchor_report(resized, 4, *configured, 8)
  scales, ratios, chosen = F.choose_anchors(resized, 4, 8, None, None, 3, 3,
                                            reference=configured)
  assert len(scales) == 3 and len(ratios) == 3
  for measure in ('recall_centred', 'recall_grid'):
    for t in ('0.5', '0.7'):
      assert chosen[measure][t] >= ref[measure][t]
  assert chosen == {**F.anchor_report(resized, 4, scales, ratios, 8),
                    'fitted': chosen['fitted']}


def test_resize_boxes_and_statistics_by_hand():
  size, boxes = F.resize_boxes(50, 80, [[10, 20, 30, 60]], 100, 1000)
  np.testing.assert_array_equal(size, [100, 160])
  np.testing.assert_allclose(boxes, [[20, 40, 60, 120]])
  stats = F.box_statistics(np.array([[40.0, 80.0]]))
  assert stats['boxes'] == 1 and stats['ratio']['p50'] == 0.5
  assert stats['size']['p50'] == pytest.approx(np.sqrt(3200), abs=0.05)


@pytest.mark.parametrize('values,want', [(['auto'], 3), (['auto:4'], 4), (['1', '2'], None)])
def test_parse_auto(values, want):
  assert F.parse_auto(values) == want


@pytest.mark.parametrize('values', [['auto:x'], ['auto:0'], ['big']])
def test_parse_auto_rejects(values):
  with pytest.raises(ValueError):
    F.parse_auto(values)
