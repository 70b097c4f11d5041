"""This tree's speed against a previous commit's, timed interleaved in one process.

    git worktree add /tmp/prev COMMIT      # any checkout of the previous code
    python bench/bench_previous.py --previous=/tmp/prev [--cases=inference,train_step]
        [--inference_size=600x800] [--inference_batch=1] [--train_size=600x800]
        [--train_batch=1] [--repeats=10] [--warmup=2] [--threads=2]

The previous tree's `faster_rcnn_tf` package is copied to a temporary folder under the
name `faster_rcnn_tf_previous` (its imports rewritten), so that both versions live in
one process and every measurement alternates between them call by call: a load change
on a shared machine hits both alike.

Cases (the two speed paths that the layer rewrites touch):
  inference   MobileNetV2 FasterRCNN.detect in a tf.function, batch norm folded (the
              default), random weights, 20 classes (bench/bench_inference.py's
              tf_function mode).
  train_step  VGG16 Trainer.step with compile_backbone=True (XLA forward, hybrid
              ops.hybrid_conv kernels in training; bench/bench_train_step.py
              --xla=backbone), SGD momentum, weight decay 1e-4, doubled bias rate.

Prints one JSON line per case: {"bench": "previous", "case", "size", "batch",
"sec_current_median", "sec_previous_median", "ratio_current_over_previous",
"sec_*_min", "ratio_of_minima", "graph_ops_current", "graph_ops_previous",
"graph_op_type_differences" ({op type: [current count, previous count]} of the traced
graphs and the functions they call: an empty dict means both versions run the same
TensorFlow ops), "repeats", "load_avg"}; a ratio of 1.0 is the same speed.
"""

import argparse
import importlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import common  # pylint: disable=wrong-import-position

PREVIOUS_PACKAGE = 'faster_rcnn_tf_previous'
CASES = ('inference', 'train_step')


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--previous', required=True,
                      help='A checkout (e.g. a git worktree) of the previous code.')
  parser.add_argument('--cases', default=','.join(CASES))
  parser.add_argument('--inference_size', default='600x800')
  parser.add_argument('--inference_batch', type=int, default=1)
  parser.add_argument('--train_size', default='600x800')
  parser.add_argument('--train_batch', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--threads', type=int, default=0,
                      help='TensorFlow intra- and inter-op threads (0: its default).')
  return parser


def import_previous(checkout):
  """Imports `checkout`/faster_rcnn_tf as PREVIOUS_PACKAGE (a renamed temporary copy)."""
  source = os.path.join(checkout, 'faster_rcnn_tf')
  if not os.path.isdir(source):
    raise SystemExit(f'bench_previous.py: error: --previous={checkout}: no faster_rcnn_tf '
                     'folder in it')
  parent = tempfile.mkdtemp(prefix='bench_previous_')
  target = os.path.join(parent, PREVIOUS_PACKAGE)
  shutil.copytree(source, target, ignore=shutil.ignore_patterns('__pycache__'))
  pattern = re.compile(r'\bfaster_rcnn_tf\b')
  for folder, _, files in os.walk(target):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        with open(path) as f:
          text = f.read()
        with open(path, 'w') as f:
          f.write(pattern.sub(PREVIOUS_PACKAGE, text))
  sys.path.insert(0, parent)
  return importlib.import_module(PREVIOUS_PACKAGE)


def _size(text):
  height, width = (int(v) for v in text.lower().split('x'))
  return height, width


def _inference_callable(package, size, batch):
  import keras
  import numpy as np
  import tensorflow as tf
  model_lib = importlib.import_module(f'{package}.model')
  keras.utils.set_random_seed(0)
  model = model_lib.FasterRCNN(20, backbone='mobilenet_v2', backbone_weights=None)
  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(0, 255, (batch, *size, 3)).astype(np.float32))
  sizes = tf.constant(np.tile(np.array([size], np.int32), (batch, 1)))
  detect = tf.function(model.detect)
  call = lambda: detect(images, sizes)['num_detections'].numpy()
  return call, lambda: detect.get_concrete_function(images, sizes)


def _train_callable(package, size, batch):
  import keras
  import numpy as np
  import tensorflow as tf
  model_lib = importlib.import_module(f'{package}.model')
  optimizer_lib = importlib.import_module(f'{package}.training.optimizer')
  trainer_lib = importlib.import_module(f'{package}.training.trainer')
  keras.utils.set_random_seed(0)
  model = model_lib.FasterRCNN(20, backbone='vgg16', backbone_weights=None,
                               compile_backbone=True)
  opt = optimizer_lib.build_optimizer(0.001, momentum=0.9)
  trainer = trainer_lib.Trainer(model, opt, tf.distribute.get_strategy(), seed=0,
                                weight_decay=1e-4, bias_lr_multiplier=2.0)
  rng = np.random.default_rng(0)
  height, width = size
  boxes = np.zeros((batch, 20, 4), np.float32)
  classes = np.zeros((batch, 20), np.int32)
  for b in range(batch):
    for k in range(5):
      y, x = rng.uniform(0, height * 0.6), rng.uniform(0, width * 0.6)
      boxes[b, k] = [y, x, y + rng.uniform(32, height * 0.4), x + rng.uniform(32, width * 0.4)]
      classes[b, k] = rng.integers(1, 21)
  data = {'images': tf.constant(rng.uniform(0, 255, (batch, height, width, 3)), tf.float32),
          'image_sizes': tf.constant(np.tile([[height, width]], (batch, 1)), tf.int32),
          'gt_boxes': tf.constant(boxes), 'gt_classes': tf.constant(classes)}
  call = lambda: trainer.step(data)['total_loss'].numpy()
  return call, lambda: trainer._step_fn.get_concrete_function(data)  # pylint: disable=protected-access


def op_counts(concrete):
  """collections.Counter of the op types in a concrete function's graph and every
  function it calls (what TensorFlow runs, names aside)."""
  import collections
  graph_def = concrete.graph.as_graph_def()
  counts = collections.Counter(node.op for node in graph_def.node)
  for function in graph_def.library.function:
    counts.update(node.op for node in function.node_def)
  return counts


def run(args):
  if args.threads:
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  import_previous(args.previous)
  builders = {'inference': (_inference_callable, args.inference_size, args.inference_batch),
              'train_step': (_train_callable, args.train_size, args.train_batch)}
  records = []
  for case in [c for c in args.cases.split(',') if c]:
    if case not in builders:
      raise SystemExit(f'bench_previous.py: error: --cases: unknown case {case!r}; '
                       f'choose from {", ".join(CASES)}')
    build, size_text, batch = builders[case]
    size = _size(size_text)
    current, current_graph = build('faster_rcnn_tf', size, batch)
    previous, previous_graph = build(PREVIOUS_PACKAGE, size, batch)
    timings = common.time_interleaved({'current': current, 'previous': previous},
                                      args.warmup, args.repeats)
    cur, prev = timings['current'][1], timings['previous'][1]
    cur_median, prev_median = statistics.median(cur), statistics.median(prev)
    cur_ops, prev_ops = op_counts(current_graph()), op_counts(previous_graph())
    record = {'bench': 'previous', 'case': case, 'size': size_text, 'batch': batch,
              'sec_current_median': round(cur_median, 4),
              'sec_previous_median': round(prev_median, 4),
              'ratio_current_over_previous': round(cur_median / prev_median, 4),
              'sec_current_min': round(min(cur), 4), 'sec_previous_min': round(min(prev), 4),
              'ratio_of_minima': round(min(cur) / min(prev), 4),
              'graph_ops_current': sum(cur_ops.values()),
              'graph_ops_previous': sum(prev_ops.values()),
              'graph_op_type_differences': {
                  op: [cur_ops[op], prev_ops[op]] for op in sorted(set(cur_ops) | set(prev_ops))
                  if cur_ops[op] != prev_ops[op]},
              'sec_current_all': [round(t, 4) for t in cur],
              'sec_previous_all': [round(t, 4) for t in prev],
              'repeats': args.repeats, 'load_avg': [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps(record), flush=True)
    records.append(record)
    del current, previous
  return records


if __name__ == '__main__':
  run(build_parser().parse_args())
