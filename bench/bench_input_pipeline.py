"""Input pipeline throughput: images/s that `data.pipeline.make_dataset` delivers.

    python bench/bench_input_pipeline.py [--bccd_dir=../shared/data/bccd] [--batch_size=2]
        [--num_batches=60] [--min_size=600] [--max_size=1000]
        [--datasets=shapes,bccd,bccd_python,bccd_tfrecord] [--cores=0]

Prints one JSON line per measurement:
    {"bench": "input_pipeline", "dataset", "split", "images_per_s", "batch_size",
     "min_size", "max_size", "num_batches", "training", "cpu_count", "cores"}
Training mode (shuffle, flip, repeat), batches fully materialized on the host.
`bccd` reads the VOC folder (its plain JPEGs decoded in TF ops, `data/graph_decode.py`);
`bccd_python` the same with Pillow decoding in a Python callback (`decode_in_graph=False`,
the path of folders that need Pillow's conversions); `bccd_tfrecord` the same split
converted first (`data.convert`, into a temporary folder; the conversion time is printed)
and read in TF ops only. `--cores=1,2` measures each dataset on that many cores: by
default (`--cores_by=affinity`) in a child process pinned to that many CPUs, everything
included; `--cores_by=threads` limits only tf.data's private thread pool (one op thread
each) in this process, whose other threads still use every core. Then it prints per
dataset the 2-over-1 scaling and, per core count, each dataset over bccd_python
("bench": "input_pipeline_ratio", "over_python"). 0: TensorFlow's own thread count. With
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
flags.DEFINE_list('datasets', ['shapes', 'bccd'],
                  'Which of shapes, bccd, bccd_python, bccd_tfrecord to measure.')
flags.DEFINE_list('cores', ['0'], 'Core counts to measure with (0: all of them).')
flags.DEFINE_enum('cores_by', 'affinity', ['affinity', 'threads'],
                  'How a core count is imposed: affinity runs the measurement in a child '
                  'process pinned to that many CPUs (the whole process: decoding, batching '
                  'and the consumer); threads limits only tf.data\'s own thread pool, in '
                  'this process.')
flags.DEFINE_integer('num_shards', 4, 'TFRecord files bccd_tfrecord is written as.')
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


def limit_threads(dataset, cores):
  """The dataset with tf.data's work on `cores` threads (0: unchanged)."""
  if not cores:
    return dataset
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  options = tf.data.Options()
  options.threading.private_threadpool_size = cores
  options.threading.max_intra_op_parallelism = 1
  return dataset.with_options(options)


def _bccd_tfrecord_spec(workdir):
  import time  # pylint: disable=g-import-not-at-top
  from faster_rcnn_tf.data import convert  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  prefix = os.path.join(workdir, 'bccd_train')
  summary = convert.convert(registry.get_source(f'voc:{FLAGS.bccd_dir}', 'train'), prefix,
                            FLAGS.num_shards)
  print(json.dumps({'bench': 'input_pipeline_convert', 'dataset': 'bccd', 'split': 'train',
                    'images': summary['images'], 'shards': FLAGS.num_shards,
                    'seconds': round(time.perf_counter() - start, 2)}), flush=True)
  return f'tfrecord:{prefix}-*.tfrecord'


def pinned_rates(cores_list):
  """{(dataset, cores): images/s} measured by this script in child processes pinned to
  the first `cores` CPUs this process may use, one child per core count; their JSON
  lines are printed here with 'cores' and 'cores_by' set."""
  import subprocess  # pylint: disable=g-import-not-at-top
  allowed = sorted(os.sched_getaffinity(0))
  rates = {}
  for cores in cores_list:
    if cores > len(allowed):
      raise app.UsageError(f'--cores={cores}: this process may use {len(allowed)} CPUs')
    cpus = allowed[:cores] if cores else allowed
    cmd = [sys.executable, os.path.abspath(__file__), '--cores=0', '--cores_by=threads',
           *[a for a in sys.argv[1:] if not a.startswith(('--cores=', '--cores_by='))]]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False,
                            preexec_fn=lambda cpus=cpus: os.sched_setaffinity(0, cpus))
    if result.returncode != 0:
      last = (result.stderr.strip().splitlines() or ['no output'])[-1]
      raise RuntimeError(f'measuring on {len(cpus)} CPUs failed: {last}')
    for line in result.stdout.splitlines():
      if not line.startswith('{'):
        continue
      record = json.loads(line)
      if record.get('bench') == 'input_pipeline':
        record.update(cores=cores, cores_by='affinity')
        rates[(record['dataset'], cores)] = record['images_per_s']
      if record.get('bench') != 'input_pipeline_ratio':
        print(json.dumps(record), flush=True)
  return rates


def print_ratios(rates):
  """The 2-over-1-core scaling per dataset and each dataset over bccd_python."""
  for (name, cores), rate in sorted(rates.items()):
    if cores == 2 and (name, 1) in rates:
      print(json.dumps({'bench': 'input_pipeline_ratio', 'dataset': name,
                        'two_over_one_core': round(rate / rates[(name, 1)], 2)}), flush=True)
    if name != 'bccd_python' and ('bccd_python', cores) in rates:
      print(json.dumps({'bench': 'input_pipeline_ratio', 'dataset': name, 'cores': cores,
                        'over_python': round(rate / rates[('bccd_python', cores)], 2)}),
            flush=True)


def run():
  """Measures and prints (see the module docstring); returns {(dataset, cores): images/s}."""
  cores_list = [int(c) for c in FLAGS.cores]
  if FLAGS.cores_by == 'affinity' and any(cores_list):
    rates = pinned_rates(cores_list)
    print_ratios(rates)
    return rates
  import tempfile  # pylint: disable=g-import-not-at-top
  workdir = tempfile.mkdtemp(prefix='bench_input_pipeline_')
  specs = {'shapes': ('shapes', 'train'), 'bccd': (f'voc:{FLAGS.bccd_dir}', 'train'),
           'bccd_python': (f'voc:{FLAGS.bccd_dir}', 'train'), 'bccd_tfrecord': (None, 'all')}
  rates = {}
  for name in FLAGS.datasets:
    spec, split = specs[name]
    if spec is None:
      spec = _bccd_tfrecord_spec(workdir)
    source = registry.get_source(spec, split)
    if name == 'bccd_python':
      source.decode_in_graph = False
    for cores in cores_list:
      ds = pipeline.make_dataset(source, training=True, batch_size=FLAGS.batch_size,
                                 min_size=FLAGS.min_size, max_size=FLAGS.max_size)
      ds = limit_threads(ds, cores)
      rate = measure_pipeline(ds, FLAGS.num_batches)
      rates[(name, cores)] = rate
      extra = {}
      if FLAGS.augment:
        sizes = tuple(int(round(FLAGS.min_size * f)) for f in (0.8, 0.9, 1.0))
        augmented = limit_threads(pipeline.make_dataset(
            source, training=True, batch_size=FLAGS.batch_size, min_size=sizes,
            max_size=FLAGS.max_size, brightness=0.125, contrast=0.3, saturation=0.3,
            hue=0.05, scale_jitter=(0.5, 2.0)), cores)
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
          'cores': cores, 'cores_by': 'threads' if cores else 'none',
          'cpus_usable': len(os.sched_getaffinity(0)),
          'load_avg': [round(v, 2) for v in os.getloadavg()], **extra}), flush=True)
  print_ratios(rates)
  return rates


def main(argv):
  del argv
  run()


if __name__ == '__main__':
  app.run(main)
