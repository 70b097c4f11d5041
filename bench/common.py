"""Shared pieces of the speed benchmarks: threads, timing, the matmul roofline, JSON lines.

Every bench script
  1. calls `configure_threads_from_argv()` BEFORE importing numpy or TensorFlow (OpenBLAS,
     MKL, OpenMP and TensorFlow read their thread counts once, when they load);
  2. calls `apply_tf_threads(args.threads)` (tf.config.threading intra / inter op);
  3. measures the fp32 matmul GFLOP/s of this machine in the same run
     (`measure_matmul`), so that every line can print the achieved fraction of it;
  4. prints one JSON line per measurement (`emit`);
  5. exits through `script_main`: non-zero when it measured nothing or every measurement
     failed, so that a run whose lines are all errors is not taken for a result.

Timing: `time_fn` runs `warmup` untimed calls (tracing, XLA compilation, allocator
warm-up), then `repeats` timed calls; every call must return host (numpy) values so that
the clock stops only after the work is done. Seconds per image = seconds per call /
batch; images per second = batch / median seconds per call.
"""

import json
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

DEFAULT_THREADS = 2
NUM_CLASSES = 20  # PASCAL VOC

THREAD_ENV_VARS = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS',
                   'TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS')

# torchvision's reference figures for this machine class (NOT measured here: torch is not
# a dependency; bench_torchvision.py measures them where it is installed). Seconds per image (inference) or per step (training, batch 1).
TORCHVISION_REFERENCE = {
    ('inference', 'vgg16'): ('torchvision VGG16 Faster R-CNN, 600x800', 2.75),
    ('train_step', 'vgg16'): ('torchvision VGG16 Faster R-CNN, 600x800', 6.0),
    ('inference', 'mobilenet_v2'): ('torchvision MobileNetV3-Large-FPN Faster R-CNN', 0.57),
    ('train_step', 'mobilenet_v2'): ('torchvision MobileNetV3-Large-FPN Faster R-CNN', 1.8),
}
REFERENCE_SIZE = (600, 800)


# ---- threads ----

def _threads_from_argv(argv, default):
  for i, arg in enumerate(argv):
    if arg.startswith('--threads='):
      return int(arg.split('=', 1)[1])
    if arg == '--threads' and i + 1 < len(argv):
      return int(argv[i + 1])
  return default


def configure_threads_from_argv(argv=None, default=DEFAULT_THREADS):
  """Sets the BLAS / OpenMP / TF thread environment variables from --threads in argv.

  Must run before numpy and TensorFlow are imported. Returns the thread count.
  """
  threads = _threads_from_argv(sys.argv[1:] if argv is None else argv, default)
  for name in THREAD_ENV_VARS:
    os.environ[name] = str(threads)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  if 'numpy' in sys.modules or 'tensorflow' in sys.modules:
    print('NOTE: numpy / TensorFlow were imported before the thread settings; the BLAS '
          'thread count may not follow --threads', file=sys.stderr)
  return threads


class BenchError(Exception):
  """Bad input or a missing requirement, reported as one line (no traceback)."""


def measurements(records):
  """The measurement records of a run: all but the roofline line and the 'fit' summaries."""
  return [r for r in records if r.get('mode') != 'matmul_roofline' and not r.get('fit')]


def exit_status(records, script='bench'):
  """0 when at least one measurement succeeded; 1 (with a line on stderr) when the run
  measured nothing or every measurement failed (its record carries an 'error')."""
  measured = measurements(records or [])
  if not measured:
    print(f'{script}: error: no measurement was made', file=sys.stderr, flush=True)
    return 1
  failed = [r for r in measured if 'error' in r]
  if len(failed) == len(measured):
    print(f'{script}: error: all {len(measured)} measurements failed; the first: '
          f'{failed[0]["error"]}', file=sys.stderr, flush=True)
    return 1
  return 0


def script_main(build_parser, run, argv=None):
  """A bench script's entry point: threads first (before TensorFlow starts), then
  `run(build_parser().parse_args(argv))`, then exit: status 0 when something was
  measured, 1 when nothing was or every measurement failed (`exit_status`), 2 with one
  line naming the problem on a bad flag value (ValueError) or a missing requirement
  (BenchError)."""
  script = os.path.basename(sys.argv[0]) or 'bench'
  configure_threads_from_argv(argv)
  args = build_parser().parse_args(argv)
  try:
    records = run(args)
  except (BenchError, ValueError) as e:
    print(f'{script}: error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  sys.exit(exit_status(records, script))


def apply_tf_threads(threads):
  """tf.config.threading intra and inter op threads (a no-op once TF has started)."""
  import tensorflow as tf
  for setter, getter in ((tf.config.threading.set_intra_op_parallelism_threads,
                          tf.config.threading.get_intra_op_parallelism_threads),
                         (tf.config.threading.set_inter_op_parallelism_threads,
                          tf.config.threading.get_inter_op_parallelism_threads)):
    if getter() == threads:
      continue
    try:
      setter(threads)
    except RuntimeError:
      print('NOTE: TensorFlow was already initialized; its thread pools keep '
            f'intra={tf.config.threading.get_intra_op_parallelism_threads()} '
            f'inter={tf.config.threading.get_inter_op_parallelism_threads()}',
            file=sys.stderr)
      break


def thread_info(threads):
  import tensorflow as tf
  return {'threads': threads,
          'tf_intra_op': tf.config.threading.get_intra_op_parallelism_threads(),
          'tf_inter_op': tf.config.threading.get_inter_op_parallelism_threads(),
          'omp_num_threads': os.environ.get('OMP_NUM_THREADS')}


def add_common_args(parser, repeats=5, warmup=1):
  """Flags every bench script takes."""
  parser.add_argument('--threads', type=int, default=DEFAULT_THREADS,
                      help='CPU threads for TF intra/inter op pools, OpenMP, MKL, OpenBLAS.')
  parser.add_argument('--repeats', type=int, default=repeats,
                      help='Timed runs per measurement (median / min / max reported).')
  parser.add_argument('--warmup', type=int, default=warmup,
                      help='Untimed runs first (tracing, XLA compilation).')
  parser.add_argument('--matmul_size', type=int, default=4096,
                      help='Side of the fp32 matmul that measures the roofline.')
  parser.add_argument('--matmul_repeats', type=int, default=3,
                      help='Timed matmuls per library (the best one counts).')
  parser.add_argument('--bandwidth_mb', type=int, default=256,
                      help='Size of the array that measures memory bandwidth (MB; 0: skip).')
  parser.add_argument('--seed', type=int, default=0, help='Weights and inputs seed.')
  parser.add_argument('--num_classes', type=int, default=NUM_CLASSES,
                      help='Foreground classes (20: VOC).')
  from faster_rcnn_tf import config_flags
  parser.add_argument('--precision', default='float32', choices=config_flags.PRECISIONS,
                      help="Keras dtype policy, as train.py --precision (mixed_float16: "
                      'loss scaling in training); the roofline is then the matmul in '
                      'the compute dtype.')
  parser.add_argument('--mixed_precision', type=int, default=0, choices=(0, 1),
                      help='1: shorthand for --precision=mixed_float16.')


FOLD_BATCH_NORM_VARIANTS = {'on': (True,), 'off': (False,), 'both': (True, False)}


def add_fold_batch_norm_arg(parser, both_means):
  """--fold_batch_norm=on|off|both (the model's fold_batch_norm; see
  `fold_variants`); both_means says how this script runs the two."""
  parser.add_argument('--fold_batch_norm', default='on',
                      choices=tuple(FOLD_BATCH_NORM_VARIANTS),
                      help='Frozen batch norm folded into the convs (the model default), '
                      f'not, or both ({both_means}).')


def fold_variants(value):
  """--fold_batch_norm value -> the model fold_batch_norm values to run, folded first."""
  return FOLD_BATCH_NORM_VARIANTS[value]


def parse_sizes(text):
  """'600x800,600x1000' -> [(600, 800), (600, 1000)]."""
  sizes = []
  for item in text.split(','):
    item = item.strip()
    if not item:
      continue
    h, w = item.lower().split('x')
    sizes.append((int(h), int(w)))
  return sizes


def parse_ints(text):
  return [int(v) for v in text.split(',') if v.strip()]


def parse_list(text):
  return [v.strip() for v in text.split(',') if v.strip()]


# ---- timing ----

def time_fn(fn, warmup, repeats):
  """(seconds of the warm-up calls, seconds of each of `repeats` timed calls) of fn()."""
  warm = []
  for _ in range(warmup):
    start = time.perf_counter()
    fn()
    warm.append(time.perf_counter() - start)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return warm, times


def time_interleaved(fns, warmup, repeats):
  """time_fn for several callables {name: fn} taking turns call by call, so that a
  noisy stretch of the machine hits them alike. Returns {name: (warm, times)}."""
  timings = {name: ([], []) for name in fns}
  for phase, count in ((0, warmup), (1, repeats)):
    for _ in range(count):
      for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        timings[name][phase].append(time.perf_counter() - start)
  return timings


def to_host(outputs):
  """Blocks until `outputs` (a nest of tensors) are computed; returns numpy values."""
  import tensorflow as tf
  return tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, 'numpy') else t, outputs)


def timing_fields(times, batch, warm=()):
  """median / min / max seconds per image and images per second from per-call times;
  first_call_s: the first warm-up call (tracing + compilation + one run)."""
  per_image = [t / batch for t in times]
  median = statistics.median(per_image)
  return {'repeats': len(times), 'warmup': len(warm),
          'first_call_s': _round(warm[0]) if warm else None,
          'sec_per_image_median': _round(median),
          'sec_per_image_min': _round(min(per_image)),
          'sec_per_image_max': _round(max(per_image)),
          'sec_per_batch_median': _round(median * batch),
          'images_per_s': _round(1.0 / median if median > 0 else float('inf'))}


def _round(x, digits=5):
  if x is None:
    return None
  if x == 0 or not (abs(x) < float('inf')):
    return x
  from math import floor, log10
  return round(x, max(0, digits - 1 - int(floor(log10(abs(x))))))


# ---- the matmul roofline ----

def measure_matmul(n=4096, repeats=3, seed=0, dtype='float32'):
  """Best GFLOP/s of an n x n matmul: numpy's BLAS (float32 only) and TensorFlow (on
  its default device: the GPU when there is one), same threads.

  dtype: 'float32', 'float16' or 'bfloat16' (the mixed policies' compute types;
  TensorFlow only, as numpy has no fast 16-bit matmul). On NVIDIA GPUs TensorFlow runs float32 matmuls as
  TF32 unless that is switched off (`tf32` in the record says which).

  Returns {'matmul_n', 'matmul_dtype', 'numpy_gflops', 'tf_gflops', 'matmul_gflops'
  (the faster), 'matmul_source', 'tf32'}.
  """
  import numpy as np
  import tensorflow as tf
  flops = 2.0 * n ** 3
  rng = np.random.default_rng(seed)
  a = rng.standard_normal((n, n), dtype=np.float32)
  b = rng.standard_normal((n, n), dtype=np.float32)
  np_g = 0.0
  if dtype == 'float32':
    _, np_times = time_fn(lambda: np.matmul(a, b), 1, repeats)
    np_g = flops / min(np_times) / 1e9
  ta, tb = tf.cast(tf.constant(a), dtype), tf.cast(tf.constant(b), dtype)
  tf_matmul = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)[:1, :1]))
  # The reduce keeps the device -> host copy tiny; the full product is still computed.
  _, tf_times = time_fn(lambda: tf_matmul(ta, tb).numpy(), 1, repeats)
  tf_g = flops / min(tf_times) / 1e9
  return {'matmul_n': n, 'matmul_dtype': dtype,
          'numpy_gflops': _round(np_g, 4) if np_g else None, 'tf_gflops': _round(tf_g, 4),
          'matmul_gflops': _round(max(np_g, tf_g), 4),
          'matmul_source': 'numpy' if np_g >= tf_g else 'tensorflow',
          'tf32': bool(tf.config.experimental.tensor_float_32_execution_enabled())}


def measure_bandwidth(megabytes=256, repeats=5):
  """Best memory bandwidth in GB/s (bytes read + written) of a streaming element-wise
  pass over a float32 array of `megabytes`, numpy (one thread) and TensorFlow (its
  intra-op threads). Returns {'bandwidth_mb', 'numpy_bandwidth_gbs', 'tf_bandwidth_gbs',
  'bandwidth_gbs' (the faster)}; {} when megabytes is 0."""
  import numpy as np
  import tensorflow as tf
  if not megabytes:
    return {}
  n = int(megabytes) * 2 ** 20 // 4
  moved = 2.0 * 4 * n  # one read and one write of every element
  a = np.random.default_rng(0).random(n, dtype=np.float32)
  out = np.empty_like(a)
  _, np_times = time_fn(lambda: np.multiply(a, np.float32(1.5), out=out), 1, repeats)
  ta = tf.constant(a)
  scale = tf.function(lambda x: tf.reduce_sum((x * 1.5)[:1]))  # the pass; a tiny result
  _, tf_times = time_fn(lambda: scale(ta).numpy(), 1, repeats)
  np_gbs, tf_gbs = moved / min(np_times) / 1e9, moved / min(tf_times) / 1e9
  return {'bandwidth_mb': int(megabytes), 'numpy_bandwidth_gbs': _round(np_gbs, 4),
          'tf_bandwidth_gbs': _round(tf_gbs, 4), 'bandwidth_gbs': _round(max(np_gbs, tf_gbs), 4)}


def bound_fields(bound_seconds_per_image, sec_per_image):
  """The roofline-model bound (bench/flops.py `roofline_bound_seconds`: each layer at
  the matmul GFLOP/s or the memory bandwidth, whichever is slower) and the measured
  time's fraction of it (1.0: at the bound)."""
  if not bound_seconds_per_image or not sec_per_image:
    return {}
  return {'bound_sec_per_image': _round(bound_seconds_per_image, 4),
          'bound_fraction': _round(bound_seconds_per_image / sec_per_image, 4)}


def roofline_fields(flop_per_image, sec_per_image, matmul):
  """GFLOP per image, achieved GFLOP/s and the fraction of the matmul GFLOP/s."""
  if flop_per_image is None or not sec_per_image:
    return {'gflop_per_image': None, 'achieved_gflops': None, 'roofline_fraction': None,
            'matmul_gflops': matmul['matmul_gflops'] if matmul else None}
  achieved = flop_per_image / sec_per_image / 1e9
  return {'gflop_per_image': _round(flop_per_image / 1e9, 5),
          'achieved_gflops': _round(achieved, 4),
          'matmul_gflops': matmul['matmul_gflops'],
          'roofline_fraction': _round(achieved / matmul['matmul_gflops'], 4)}


def reference_fields(mode, backbone, height, width, sec_per_image):
  """torchvision's quoted figure for this configuration, when there is one (not measured)."""
  key = ('train_step' if mode.startswith('train') else 'inference', backbone)
  if key not in TORCHVISION_REFERENCE or (height, width) != REFERENCE_SIZE:
    return {}
  what, seconds = TORCHVISION_REFERENCE[key]
  return {'reference': {'what': what, 'seconds': seconds,
                        'unit': 's/step' if key[0] == 'train_step' else 's/image',
                        'source': 'reference figure (quoted, not measured here)',
                        'measured_over_reference': _round(sec_per_image / seconds, 4)}}


# ---- records ----

def host_fields():
  import tensorflow as tf
  try:
    load = [round(v, 2) for v in os.getloadavg()]
  except OSError:
    load = None
  return {'cpu_count': os.cpu_count(), 'load_avg': load, 'tf_version': tf.__version__,
          'machine': platform.machine(), 'gpus': gpu_names(),
          'precision': precision(),
          'onednn_opts': os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default')}


def precision():
  """The Keras global dtype policy's name ('float32', 'mixed_float16', 'mixed_bfloat16')."""
  import keras
  return keras.mixed_precision.global_policy().name


def activation_bytes(policy=None):
  """Bytes per activation value under `policy` (default: the global one): 2 (mixed) or 4."""
  return 2 if (policy or precision()).startswith('mixed_') else 4


def build_model_under(policy, backbone, num_classes=NUM_CLASSES, seed=0, **overrides):
  """`build_model` with its layers made under the Keras dtype policy `policy` (a model
  keeps its layers' policies), restoring the global policy after."""
  import keras
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(policy)
  try:
    return build_model(backbone, num_classes, seed, **overrides)
  finally:
    keras.mixed_precision.set_global_policy(previous)


def gpu_names():
  """The names of TensorFlow's visible GPUs ([] on a CPU-only machine)."""
  import tensorflow as tf
  names = []
  for gpu in tf.config.list_physical_devices('GPU'):
    details = tf.config.experimental.get_device_details(gpu)
    names.append(details.get('device_name', gpu.name))
  return names


def emit(record, stream=None):
  """Prints one JSON line (and returns the record)."""
  print(json.dumps(record), file=stream or sys.stdout, flush=True)
  return record


def note(text):
  print(f'NOTE: {text}', file=sys.stderr, flush=True)


def matmul_record(bench, args, matmul):
  return dict({'bench': bench, 'mode': 'matmul_roofline'}, **matmul,
              **thread_info(args.threads), **host_fields())


def start(bench, args):
  """Threads and precision policy, then the matmul roofline (in the compute dtype) and
  memory bandwidth of this run (printed as the first JSON line)."""
  import keras
  from faster_rcnn_tf import config_flags
  apply_tf_threads(args.threads)
  config_flags.apply_precision(args)  # --precision, or its --mixed_precision shorthand
  dtype = keras.mixed_precision.global_policy().compute_dtype
  matmul = measure_matmul(args.matmul_size, args.matmul_repeats, args.seed, dtype)
  matmul.update(measure_bandwidth(getattr(args, 'bandwidth_mb', 0)))
  emit(matmul_record(bench, args, matmul))
  return matmul


# ---- model and inputs ----

def build_model(backbone, num_classes=NUM_CLASSES, seed=0, **overrides):
  """FasterRCNN with random weights (backbone_weights=None), model defaults otherwise."""
  import keras
  from faster_rcnn_tf.model import FasterRCNN
  keras.utils.set_random_seed(seed)
  return FasterRCNN(num_classes, backbone=backbone, backbone_weights=None, **overrides)


def random_images(batch, height, width, seed=0):
  """float32 [batch, height, width, 3] in [0, 255] and int32 image_sizes [batch, 2]."""
  import numpy as np
  rng = np.random.default_rng(seed)
  images = rng.uniform(0.0, 255.0, (batch, height, width, 3)).astype(np.float32)
  sizes = np.tile(np.array([[height, width]], np.int32), (batch, 1))
  return images, sizes


def random_train_batch(batch, height, width, num_boxes=5, max_boxes=20, seed=0,
                       num_classes=NUM_CLASSES):
  """A training batch dict (see `faster_rcnn_tf.inputs`) with random boxes."""
  import numpy as np
  from faster_rcnn_tf import inputs
  rng = np.random.default_rng(seed)
  images, sizes = random_images(batch, height, width, seed)
  boxes = np.zeros((batch, max_boxes, 4), np.float32)
  classes = np.zeros((batch, max_boxes), np.int32)
  for b in range(batch):
    for g in range(min(num_boxes, max_boxes)):
      bh = rng.uniform(0.1, 0.6) * height
      bw = rng.uniform(0.1, 0.6) * width
      y0 = rng.uniform(0, height - bh)
      x0 = rng.uniform(0, width - bw)
      boxes[b, g] = (y0, x0, y0 + bh, x0 + bw)
      classes[b, g] = rng.integers(1, num_classes + 1)
  return {inputs.IMAGES: images, inputs.IMAGE_SIZES: sizes,
          inputs.SCALES: np.ones((batch,), np.float32),
          inputs.ORIGINAL_SIZES: sizes.copy(),
          inputs.IMAGE_IDS: np.arange(batch, dtype=np.int64),
          inputs.GT_BOXES: boxes, inputs.GT_CLASSES: classes,
          inputs.GT_DIFFICULT: np.zeros((batch, max_boxes), bool)}
