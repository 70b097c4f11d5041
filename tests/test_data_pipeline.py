"""make_dataset: the batch format, padding, truncation, flips, shuffling."""

import logging

import numpy as np
import tensorflow as tf

from faster_rcnn_tf import inputs
from faster_rcnn_tf.data import pipeline
from faster_rcnn_tf.data import records
from faster_rcnn_tf.data.source import InMemorySource
from tests.test_data_transforms import BOX, bright_extent, outline_image


def _record(height, width, boxes, classes, image_id, difficult=None, value=100):
  image = np.full((height, width, 3), value, np.uint8)
  return records.make_record(image, boxes, classes, difficult, image_id)


def _batches(ds):
  return [{k: v.numpy() for k, v in b.items()} for b in ds]


def test_batch_format_and_padding():
  source = InMemorySource([
      _record(50, 80, [[10, 20, 30, 60]], [1], 7),
      _record(40, 40, [[0, 0, 40, 40], [5, 5, 10, 10]], [2, 1], 8, [False, True]),
      _record(30, 90, [], [], 9),
  ], ['a', 'b'])
  ds = pipeline.make_dataset(source, training=False, batch_size=2, min_size=100,
                             max_size=150, max_boxes=5)
  batches = _batches(ds)
  assert len(batches) == 2  # eval keeps the remainder, does not repeat
  b = batches[0]
  assert set(b) == {inputs.IMAGES, inputs.IMAGE_SIZES, inputs.SCALES, inputs.ORIGINAL_SIZES,
                    inputs.IMAGE_IDS, inputs.GT_BOXES, inputs.GT_CLASSES, inputs.GT_DIFFICULT}
  assert b[inputs.IMAGES].dtype == np.float32 and b[inputs.IMAGE_SIZES].dtype == np.int32
  assert b[inputs.SCALES].dtype == np.float32 and b[inputs.IMAGE_IDS].dtype == np.int64
  assert b[inputs.GT_BOXES].dtype == np.float32 and b[inputs.GT_CLASSES].dtype == np.int32
  assert b[inputs.GT_DIFFICULT].dtype == bool
  # 50x80 -> scale min(100/50, 150/80) = 1.875 -> 94x150; 40x40 -> scale 2.5 -> 100x100.
  np.testing.assert_array_equal(b[inputs.IMAGE_SIZES], [[94, 150], [100, 100]])
  np.testing.assert_allclose(b[inputs.SCALES], [1.875, 2.5])
  np.testing.assert_array_equal(b[inputs.ORIGINAL_SIZES], [[50, 80], [40, 40]])
  np.testing.assert_array_equal(b[inputs.IMAGE_IDS], [7, 8])
  assert b[inputs.IMAGES].shape == (2, 128, 160, 3)  # max (100, 150) up to multiples of 32
  # pixels 0..255 not mean-subtracted, zero padding bottom/right
  np.testing.assert_allclose(b[inputs.IMAGES][0, :94, :150], 100.0)
  assert not b[inputs.IMAGES][0, 94:].any() and not b[inputs.IMAGES][0, :, 150:].any()
  assert not b[inputs.IMAGES][1, 100:].any() and not b[inputs.IMAGES][1, :, 100:].any()
  # ground truth in resized pixels, padded to max_boxes with zeros
  assert b[inputs.GT_BOXES].shape == (2, 5, 4)
  np.testing.assert_allclose(b[inputs.GT_BOXES][0, 0], [10 * 94 / 50, 20 * 1.875, 30 * 94 / 50,
                                                        60 * 1.875], rtol=1e-6)
  np.testing.assert_allclose(b[inputs.GT_BOXES][1, :2], [[0, 0, 100, 100], [12.5, 12.5, 25, 25]])
  np.testing.assert_array_equal(b[inputs.GT_CLASSES], [[1, 0, 0, 0, 0], [2, 1, 0, 0, 0]])
  np.testing.assert_array_equal(b[inputs.GT_DIFFICULT][1], [False, True, False, False, False])
  assert not b[inputs.GT_BOXES][0, 1:].any()
  last = batches[1]
  assert last[inputs.IMAGES].shape == (1, 64, 160, 3)  # 30x90 -> 50x150 -> 64x160
  assert not last[inputs.GT_CLASSES].any()


def test_max_boxes_keeps_first_and_reports(caplog):
  boxes = [[i, i, i + 5, i + 5] for i in range(6)]
  source = InMemorySource([_record(20, 20, boxes, [1, 2, 1, 2, 1, 2], 3)], ['a', 'b'])
  ds = pipeline.make_dataset(source, training=False, batch_size=1, min_size=20, max_size=20,
                             max_boxes=4, pad_multiple=1)
  with caplog.at_level(logging.WARNING):
    b = _batches(ds)[0]
  np.testing.assert_array_equal(b[inputs.GT_CLASSES][0], [1, 2, 1, 2])
  np.testing.assert_array_equal(b[inputs.GT_BOXES][0], boxes[:4])
  assert b[inputs.IMAGES].shape == (1, 20, 20, 3)
  assert source.problems.count('too_many_boxes') == 1
  assert any('too_many_boxes' in m and 'image_id 3' in m for m in caplog.messages)


def test_skip_difficult():
  source = InMemorySource([_record(20, 20, [[0, 0, 5, 5], [1, 1, 9, 9], [2, 2, 8, 8]],
                                   [1, 2, 1], 0, [True, False, True])], ['a', 'b'])
  b = _batches(pipeline.make_dataset(source, training=False, batch_size=1, min_size=20,
                                     max_size=20, max_boxes=3, skip_difficult=True))[0]
  np.testing.assert_array_equal(b[inputs.GT_CLASSES][0], [2, 0, 0])
  np.testing.assert_array_equal(b[inputs.GT_BOXES][0, 0], [1, 1, 9, 9])


def test_training_flips_and_resizes_with_boxes_on_their_pixels():
  """Draws the box outline into the image; after the pipeline it is where gt_boxes say."""
  image = outline_image(50, 80, BOX)
  source = InMemorySource([records.make_record(image, [BOX], [1], None, i) for i in range(4)],
                          ['a'])
  ds = pipeline.make_dataset(source, training=True, batch_size=2, min_size=100, max_size=1000,
                             shuffle_seed=3)
  flips = []
  for b in _batches(ds.take(8)):
    assert b[inputs.IMAGES].shape == (2, 128, 160, 3)
    for k in range(2):
      box = b[inputs.GT_BOXES][k, 0]
      # integer scale 2: the outline's bright band starts and ends exactly on the box
      np.testing.assert_array_equal(bright_extent(b[inputs.IMAGES][k]), box)
      flips.append(bool(box[1] != 40))
  assert any(flips) and not all(flips)


def test_shuffle_is_seeded_covers_each_epoch_and_changes_between_epochs():
  source = InMemorySource([_record(8, 8, [[0, 0, 4, 4]], [1], i) for i in range(10)], ['a'])

  def ids(seed):
    ds = pipeline.make_dataset(source, training=True, batch_size=5, min_size=8, max_size=8,
                               shuffle_seed=seed)
    return [int(i) for b in ds.take(6) for i in b[inputs.IMAGE_IDS].numpy()]

  first = ids(1)
  assert first == ids(1)
  assert first != ids(2)
  epochs = [first[0:10], first[10:20], first[20:30]]
  for epoch in epochs:
    assert sorted(epoch) == list(range(10))
  assert epochs[0] != epochs[1]
  # eval order is the source order
  ds = pipeline.make_dataset(source, training=False, batch_size=4, min_size=8, max_size=8)
  assert [int(i) for b in ds for i in b[inputs.IMAGE_IDS].numpy()] == list(range(10))


def test_training_drops_remainder_and_repeats():
  source = InMemorySource([_record(8, 8, [], [], i) for i in range(3)], ['a'])
  ds = pipeline.make_dataset(source, training=True, batch_size=2, min_size=8, max_size=8)
  shapes = [b[inputs.IMAGES].shape[0] for b in ds.take(5)]
  assert shapes == [2] * 5
  assert ds.element_spec[inputs.IMAGES].shape.as_list() == [2, None, None, 3]


class _Clock:
  """A stand-in for `time` whose perf_counter advances 2 seconds a call, so that a rate
  is images counted / 2 exactly, whatever the machine's speed."""

  def __init__(self):
    self.now = 100.0

  def perf_counter(self):
    self.now += 2.0
    return self.now


def test_measure_pipeline_counts_images(monkeypatch):
  # Catches counting batches (or a fixed batch size) instead of the images each batch
  # holds, and counting the warm-up batches.
  monkeypatch.setattr(pipeline, 'time', _Clock())
  source = InMemorySource([_record(8, 8, [], [], i) for i in range(4)], ['a'])
  ds = pipeline.make_dataset(source, training=True, batch_size=2, min_size=8, max_size=8)
  assert pipeline.measure_pipeline(ds, 5) == 5 * 2 / 2.0  # 5 batches of 2 images, 2 s
  # Evaluation batches of 3, 3, 3, 1 (10 images): the first two are warm-up, and the
  # timed ones hold 3 + 1 images (the dataset ends before the 6 batches asked for).
  source = InMemorySource([_record(8, 8, [], [], i) for i in range(10)], ['a'])
  ds = pipeline.make_dataset(source, training=False, batch_size=3, min_size=8, max_size=8)
  assert pipeline.measure_pipeline(ds, 6, warmup_batches=2) == (3 + 1) / 2.0
  assert pipeline.measure_pipeline(tf.data.Dataset.from_tensors({inputs.IMAGES: tf.zeros([3])})
                                   .repeat(2), 5, warmup_batches=2) == 0.0
