"""Evaluating photos of many sizes (raccoon's test split) traces the detector a handful of
times: evaluation batches are padded to a few fixed sides."""

import contextlib
import logging

import numpy as np
import tensorflow as tf

from faster_rcnn_tf import inputs
from faster_rcnn_tf.data import pipeline
from faster_rcnn_tf.data import voc
from faster_rcnn_tf.evaluation import run_model
from faster_rcnn_tf.model import FasterRCNN
from tests.test_data_voc import _shared


def test_bucket_sides_cover_every_resized_size():
  sides = pipeline.bucket_sides(600, 1000)
  assert sides == [256, 512, 608, 768, 1024]
  assert all(s % 32 == 0 for s in pipeline.bucket_sides(800, 1333))
  # Every (h, w) an image can be resized to fits in a bucket, and the buckets are few.
  for h, w in ((600, 1000), (1000, 600), (600, 601), (240, 1000), (17, 1000)):
    assert any(s >= h for s in sides) and any(s >= w for s in sides)


@contextlib.contextmanager
def _tensorflow_warnings(caplog):
  """caplog receives TensorFlow's Python warnings whatever earlier code did to the
  'tensorflow' logger (its level, or propagation cut by absl / console set-up)."""
  logger = tf.get_logger()
  level = logger.level
  logger.setLevel(logging.WARNING)
  logger.addHandler(caplog.handler)
  try:
    yield
  finally:
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


def test_raccoon_test_split_traces_detect_a_handful_of_times(caplog):
  source = voc.VocSource(_shared('raccoon'), 'test')
  sizes = {tuple(r['image'].shape[:2]) for r in source.records()}
  assert len(sizes) > 15  # photos of many sizes
  tf.keras.utils.set_random_seed(0)  # the same random model whatever ran before
  model = FasterRCNN(num_classes=1, backbone='tiny', rpn_channels=16, anchor_scales=(1, 2, 4),
                     test_pre_nms_topk=100, test_post_nms_topk=16, max_detections=10)
  min_size, max_size = 256, 448

  def count_traces(dataset):
    detect = tf.function(model.detect)
    shapes = set()
    for batch in dataset:
      shapes.add(tuple(batch[inputs.IMAGES].shape))
      detect(batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES])
    return detect.experimental_get_tracing_count(), shapes

  # Padded only to multiples of 32, as before: a shape, and a trace, per size mix.
  plain = pipeline.make_dataset(source, training=False, batch_size=2, min_size=min_size,
                                max_size=max_size, max_boxes=4)
  plain_traces, plain_shapes = count_traces(plain)
  with _tensorflow_warnings(caplog):
    bucketed = run_model.make_eval_dataset(source, 2, min_size, max_size)
    traces, shapes = count_traces(bucketed)
  assert traces == len(shapes) <= 5, shapes
  assert plain_traces == len(plain_shapes) > traces, (plain_shapes, shapes)
  # TensorFlow's retracing warning: not printed for the buckets. (Its positive control,
  # the warning for the tight padding, is printed only in a fresh process: TensorFlow caps
  # the warnings per traced function, and earlier tests of model.detect may spend them.)
  assert not [r for r in caplog.records if 'retracing' in r.getMessage()]
  print('traces: multiples of 32', plain_traces, 'buckets', traces)

  # The same detections inside each image as with the tighter padding (the tiny backbone
  # has no batch norm: zero padding beyond the image changes nothing inside it).
  detect = tf.function(model.detect, reduce_retracing=True)
  for a, b in zip(plain.take(3), bucketed.take(3)):
    np.testing.assert_array_equal(a[inputs.IMAGE_SIZES], b[inputs.IMAGE_SIZES])
    out_a = detect(a[inputs.IMAGES], a[inputs.IMAGE_SIZES])
    out_b = detect(b[inputs.IMAGES], b[inputs.IMAGE_SIZES])
    # The leading detections: a larger canvas also scores anchors in the padding, which
    # can trade a proposal of near-equal score (the random model's scores are all ~0.5)
    # at the tail of the top-k.
    np.testing.assert_allclose(out_a[inputs.DETECTION_SCORES][:, :5],
                               out_b[inputs.DETECTION_SCORES][:, :5], atol=1e-5)
