"""Synthetic shapes: determinism, exact tight boxes, options."""

import numpy as np
import pytest

from faster_rcnn_tf.data import shapes


def test_deterministic_per_seed_and_split():
  a = shapes.ShapesSource('train', seed=0)
  b = shapes.ShapesSource('train', seed=0)
  for i in (0, 1, 57):
    ra, rb = a.load(i), b.load(i)
    for key in ra:
      np.testing.assert_array_equal(ra[key], rb[key])
  # random access gives what sequential iteration gives
  first = [r['image'] for _, r in zip(range(3), a.records())]
  for i in range(3):
    np.testing.assert_array_equal(first[i], b.load(i)['image'])
  assert not np.array_equal(a.load(0)['image'], shapes.ShapesSource('train', seed=1).load(0)['image'])
  assert not np.array_equal(a.load(0)['image'], shapes.ShapesSource('test', seed=0).load(0)['image'])


def test_defaults_and_format():
  train, test = shapes.ShapesSource('train'), shapes.ShapesSource('test')
  assert (train.num_images, test.num_images) == (2000, 200)
  assert train.class_names == ['circle', 'square', 'triangle']
  r = train.load(5)
  assert r['image'].shape == (128, 128, 3) and r['image'].dtype == np.uint8
  assert r['boxes'].dtype == np.float32 and r['classes'].dtype == np.int32
  assert r['image_id'] == 5
  np.testing.assert_array_equal(r['original_size'], [128, 128])
  with pytest.raises(ValueError):
    shapes.ShapesSource('validation')


def test_boxes_are_tight_around_drawn_shapes():
  source = shapes.ShapesSource('train', seed=3)
  counts = np.zeros(3, int)
  isolated = 0
  for i in range(40):
    r = source.load(i)
    boxes = r['boxes'].astype(int)
    assert 1 <= len(boxes) <= 4
    counts += np.bincount(r['classes'] - 1, minlength=3)
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 128)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    # size sqrt(h * w) in 16..64 and aspect h / w in 0.6..1.6: a side is at most 64 * 1.6**0.5
    assert np.all(sides <= 64 * 1.6 ** 0.5 + 1) and np.all(sides >= 4)
    # Which pixels the shapes changed, found independently of the boxes.
    drawn = np.any(r['image'] != source.background(i), axis=-1)
    inside_some_box = np.zeros_like(drawn)
    for ymin, xmin, ymax, xmax in boxes:
      inside_some_box[ymin:ymax, xmin:xmax] = True
      region = drawn[ymin:ymax, xmin:xmax]
      # tight: the box's first and last row and column each contain drawn pixels
      assert region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()
    assert not (drawn & ~inside_some_box).any()  # nothing drawn outside the boxes
    for k, (ymin, xmin, ymax, xmax) in enumerate(boxes):
      others = np.delete(boxes, k, axis=0)
      if np.any((others[:, 0] <= ymax) & (others[:, 2] >= ymin) &
                (others[:, 1] <= xmax) & (others[:, 3] >= xmin)):
        continue
      isolated += 1
      # a shape with no neighbour: the drawn pixels around it span exactly its box
      y0, x0 = max(ymin - 1, 0), max(xmin - 1, 0)
      window = drawn[y0:ymax + 1, x0:xmax + 1]
      rows, cols = np.flatnonzero(window.any(1)), np.flatnonzero(window.any(0))
      assert [rows[0] + y0, cols[0] + x0, rows[-1] + 1 + y0, cols[-1] + 1 + x0] == [
          ymin, xmin, ymax, xmax]
  assert isolated > 20
  assert np.all(counts > 10)  # all three classes appear


def test_options():
  source = shapes.ShapesSource('test', seed=0, image_size=160, num_images=7, max_objects=2)
  assert source.num_images == 7
  records = list(source.records())
  assert len(records) == 7
  assert all(r['image'].shape == (160, 160, 3) and len(r['boxes']) <= 2 for r in records)
  # Speed: bench/bench_eval_speed.py (mode shapes_records).


def test_class_subset_drops_other_shapes():
  source = shapes.ShapesSource('train', classes=['triangle', 'circle'])
  assert source.class_names == ['triangle', 'circle']
  full = shapes.ShapesSource('train')
  for i in range(10):
    r, f = source.load(i), full.load(i)
    names = [full.class_names[c - 1] for c in f['classes']]
    expected = [source.class_names.index(n) + 1 for n in names if n != 'square']
    np.testing.assert_array_equal(r['classes'], expected)
  with pytest.raises(ValueError):
    shapes.ShapesSource('train', classes=['hexagon'])
