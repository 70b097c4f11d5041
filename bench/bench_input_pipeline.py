"""Input pipeline throughput: images/s that `data.pipeline.make_dataset` delivers.

    python bench/bench_input_pipeline.py [--bccd_dir=../shared/data/bccd] [--batch_size=2]
        [--num_batches=60] [--min_size=600] [--max_size=1000] [--datasets=shapes,bccd]

Prints one JSON line per measurement:
    {"bench": "input_pipeline", "dataset", "split", "images_per_s", "batch_size",
     "min_size", "max_size", "num_batches", "training", "cpu_count"}
Training mode (shuffle, flip, repeat), batches fully materialized on the host. With
--augment, the same pipeline with every augmentation on is timed too, in the same run:
multi-scale (shorter side drawn from 0.8, 0.9 and 1.0 x min_size), photometric
distortion (brightness 0.125, contrast, saturation 0.3, hue 0.05) and scale jitter 0.5-2.0
with crop: "augmented_images_per_s" and "augmented_over_plain". Beside it,
in the same run, what a training step of `--train_backbone` (default mobilenet_v2, the
fastest real model on a CPU) consumes on batches of that pipeline:
    "train_images_per_s", "pipeline_over_training" (the issue asks for at least 5).
"""

import json
import os
import sys

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

from faster_rcnn_tf.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from faster_rcnn_tf.data import registry  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string('bccd_dir', os.path.join(_REPO, '..', 'shared', 'data', 'bccd'),
                    'BCCD VOC folder.')
flags.DEFINE_list('datasets', ['shapes', 'bccd'], 'Which of shapes, bccd to measure.')
flags.DEFINE_integer('batch_size', 2, 'Images per batch.')
flags.DEFINE_integer('num_batches', 60, 'Batches timed (after 3 warm-up batches).')
flags.DEFINE_integer('min_size', 600, 'Shorter side after resizing.')
flags.DEFINE_integer('max_size', 1000, 'Longer side cap.')
flags.DEFINE_bool('augment', False, 'Also time the pipeline with all augmentations on.')
flags.DEFINE_string('train_backbone', 'mobilenet_v2',
                    "Backbone whose training step is measured beside ('' to skip).")
flags.DEFINE_integer('train_steps', 4, 'Training steps timed (after 1 warm-up step).')
FLAGS = flags.FLAGS


def measure_pipeline(dataset, num_batches):
  """Images/s of a batched dataset (see `data.pipeline.measure_pipeline`)."""
  return pipeline.measure_pipeline(dataset, num_batches, warmup_batches=3)


def measure_training(source, dataset, backbone, steps):
  """Images/s one training step (forward, losses, gradients, SGD update) consumes."""
  import time  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from faster_rcnn_tf.model import FasterRCNN  # pylint: disable=g-import-not-at-top
  from faster_rcnn_tf.training import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from faster_rcnn_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
  model = FasterRCNN(source.num_classes, backbone=backbone)
  opt = optimizer_lib.build_optimizer(0.001)
  trainer = Trainer(model, opt, tf.distribute.get_strategy())
  batches = iter(dataset)
  trainer.step(next(batches))  # warm-up: tracing
  images = 0
  start = time.perf_counter()
  for _ in range(steps):
    batch = next(batches)
    trainer.step(batch)['total_loss'].numpy()
    images += int(batch['images'].shape[0])
  return images / (time.perf_counter() - start)


def main(argv):
  del argv
  specs = {'shapes': ('shapes', 'train'), 'bccd': (f'voc:{FLAGS.bccd_dir}', 'train')}
  for name in FLAGS.datasets:
    spec, split = specs[name]
    source = registry.get_source(spec, split)
    ds = pipeline.make_dataset(source, training=True, batch_size=FLAGS.batch_size,
                               min_size=FLAGS.min_size, max_size=FLAGS.max_size)
    rate = measure_pipeline(ds, FLAGS.num_batches)
    extra = {}
    if FLAGS.augment:
      sizes = tuple(int(round(FLAGS.min_size * f)) for f in (0.8, 0.9, 1.0))
      augmented = pipeline.make_dataset(
          source, training=True, batch_size=FLAGS.batch_size, min_size=sizes,
          max_size=FLAGS.max_size, brightness=0.125, contrast=0.3, saturation=0.3,
          hue=0.05, scale_jitter=(0.5, 2.0))
      augmented_rate = measure_pipeline(augmented, FLAGS.num_batches)
      extra.update(augmented_images_per_s=round(augmented_rate, 1),
                   augmented_over_plain=round(augmented_rate / rate, 2))
    if FLAGS.train_backbone:
      train_rate = measure_training(source, ds, FLAGS.train_backbone, FLAGS.train_steps)
      extra.update(train_backbone=FLAGS.train_backbone,
                   train_images_per_s=round(train_rate, 3),
                   pipeline_over_training=round(rate / train_rate, 1))
    print(json.dumps({
        'bench': 'input_pipeline', 'dataset': name, 'split': split,
        'images_per_s': round(rate, 1), 'batch_size': FLAGS.batch_size,
        'min_size': FLAGS.min_size, 'max_size': FLAGS.max_size,
        'num_batches': FLAGS.num_batches, 'training': True, 'cpu_count': os.cpu_count(),
        **extra}), flush=True)


if __name__ == '__main__':
  app.run(main)
