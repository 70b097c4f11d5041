"""Command-line flags shared by train.py, evaluate.py, export.py and predict.py.

Each flag sets the `config.RunConfig` field of the same name (`RunConfig.from_flags`
builds the configuration from parsed flags; tests/test_config.py checks that names and
defaults agree). Every flag can be set in a `--flagfile` (one `--name=value` a line; `#`
starts a comment). To add a setting: define its flag here and add a field of the same
name and default to the right section in faster_rcnn_tf/config.py.
"""

import functools
import os
import sys
import types

from absl import flags

from faster_rcnn_tf import backbones
from faster_rcnn_tf import config as config_lib
from faster_rcnn_tf import batch_splitting
from faster_rcnn_tf.layers import detection_generator


def _floats(name, default, help_text):
  flags.DEFINE_list(name, [str(v) for v in default], help_text)


def define_data_flags():
  flags.DEFINE_string('dataset', 'shapes',
                      "Dataset spec: 'shapes' (built-in), 'voc:DIR' (also LabelImg), "
                      "'yolo:DIR', 'tfrecord:GLOB', 'coco:ANNOTATIONS.json[:IMAGES_DIR]' "
                      "or 'tfds:NAME'.")
  flags.DEFINE_string('train_split', 'train', 'Split to train on.')
  flags.DEFINE_string('eval_split', 'test', 'Split to evaluate on.')
  flags.DEFINE_string('data_dir', None, 'tensorflow-datasets data folder (tfds: datasets).')
  flags.DEFINE_list('classes', None, 'Class names (VOC folders: default from annotations).')
  flags.DEFINE_float('val_fraction', 0.1, "Data without split files (folders without "
                     "them, tfrecord:): share of images in split 'val'; 'train' has the "
                     "rest, chosen by a hash of each image name.")
  flags.DEFINE_string('label_map', None, 'tfrecord: datasets: a label_map.pbtxt naming the '
                      'classes (default: the class texts in the records).')
  flags.DEFINE(SizesParser(), 'min_size', 600,
               'Resize so the shorter side is this many pixels... A list (e.g. '
               '480,512,544,576,608,640,672,704,736,768,800): multi-scale training, one '
               'size drawn for each batch; evaluation, export and prediction use '
               '--test_min_size.', serializer=SizesSerializer())
  flags.DEFINE_integer('test_min_size', 0, 'Shorter side for evaluation, export and '
                       'prediction (one scale); 0: the largest --min_size.')
  flags.DEFINE_integer('max_size', 1000, '...and the longer side at most this many.')
  flags.DEFINE_integer('max_boxes', 100, 'Ground-truth boxes kept per image (padding size).')
  flags.DEFINE_bool('flip', True, 'Random horizontal flips in training.')
  help_texts = {
      'brightness': 'add a value from [-this, this] x 255 to the pixels',
      'contrast': 'scale distances to the channel means by a factor from '
                  '[1 - this, 1 + this]',
      'saturation': 'scale the saturation by a factor from [1 - this, 1 + this]',
      'hue': 'rotate the hue by up to this fraction of the colour circle'}
  for name, high in config_lib.AUGMENT_LIMITS:
    flags.DEFINE_float(name, 0.0, f'Training: {help_texts[name]} (0: off; at most {high}).',
                       lower_bound=0.0, upper_bound=high)
  jitter = flags.DEFINE_list(
      'scale_jitter', [], 'LOW,HIGH: training multiplies the resize factor by a factor '
      'from [LOW, HIGH] and crops a window of at most the usual size (e.g. 0.5,2.0); '
      'empty: off.')
  flags.register_validator(jitter, valid_scale_jitter,
                           message='expected two numbers LOW,HIGH with 0 < LOW <= HIGH')
  flags.DEFINE_bool('skip_difficult', True, 'Leave difficult objects out of training.')
  flags.DEFINE_integer('shapes_image_size', 128, 'Side of the built-in shapes images.')
  flags.DEFINE_integer('shapes_train_images', 2000, 'Images in the shapes train split.')
  flags.DEFINE_integer('shapes_test_images', 200, 'Images in the shapes test split.')


class SizesParser(flags.ArgumentParser):
  """--min_size: one positive int, or several separated by commas (multi-scale training).

  The value is an int for one size and a tuple of ints for several, as
  `config.DataConfig.min_size`.
  """

  def parse(self, argument):
    try:
      sizes = config_lib.min_sizes_of(argument)
    except config_lib.ConfigError:
      raise ValueError(f'expected positive integers separated by commas, got {argument!r}'
                       ) from None
    return sizes[0] if len(sizes) == 1 else sizes

  def flag_type(self):
    return 'int or int list'


class SizesSerializer(flags.ArgumentSerializer):
  """Writes --min_size back as the parser reads it (flags.cfg of a run)."""

  def serialize(self, value):
    return ','.join(str(v) for v in config_lib.min_sizes_of(value))


def valid_scale_jitter(value):
  """Whether --scale_jitter is empty or LOW,HIGH with 0 < LOW <= HIGH."""
  try:
    config_lib.scale_jitter_of(value)
  except config_lib.ConfigError:
    return False
  return True


def define_input_service_flags():
  """train.py's flags for running the input pipeline on a tf.data service (fields of
  `config.DataConfig`; defined by `define_train_flags`)."""
  flags.DEFINE_string('data_service', '', 'grpc://HOST:PORT of a tf.data service dispatcher: '
                      'its workers run the input pipeline (tfrecord: datasets; see '
                      'faster_rcnn_tf/data/service.py). Empty: preprocess locally.')
  flags.DEFINE_enum('data_service_mode', 'dynamic', ['dynamic', 'off'],
                    "How the service's workers share the data: dynamic (each file of an "
                    'epoch to one worker) or off (every worker reads everything).')


def define_model_flags():
  flags.DEFINE_enum('backbone', 'vgg16', list(backbones.NAMES), 'Backbone network.')
  flags.DEFINE_string('backbone_weights', 'none',
                      "'none', 'imagenet' (Keras download) or a local weights file.")
  flags.DEFINE_bool('freeze_early_layers', True, "Freeze the backbone's first blocks.")
  flags.DEFINE_bool('train_batch_norm', False,
                    'Train batch normalization (batch statistics, learned scale and shift) '
                    'instead of freezing it; for backbones with batch norm trained from '
                    'scratch (backbone_weights=none) on batches of several images.')
  _floats('anchor_scales', (8, 16, 32), "Anchor scales (times anchor_base_size); train.py: "
          "'auto' (3) or 'auto:N' fits N to the training split's boxes "
          "(data/anchor_fit.py) and writes them to the run's run_config.json.")
  _floats('anchor_ratios', (0.5, 1.0, 2.0), "Anchor aspect ratios (height / width); "
          "train.py: 'auto' or 'auto:N' as for --anchor_scales.")
  flags.DEFINE_integer('anchor_base_size', 16, 'Anchor base size in pixels.')
  flags.DEFINE_integer('rpn_channels', 512, "Width of the RPN's 3x3 conv.")
  flags.DEFINE_integer('train_pre_nms_topk', 12000, 'Proposals kept before NMS (training).')
  flags.DEFINE_integer('train_post_nms_topk', 2000, 'Proposals kept after NMS (training).')
  flags.DEFINE_integer('test_pre_nms_topk', 6000, 'Proposals kept before NMS (inference).')
  flags.DEFINE_integer('test_post_nms_topk', 300, 'Proposals kept after NMS (inference).')
  flags.DEFINE_integer('rpn_num_samples', 256, 'Anchors sampled per image.')
  flags.DEFINE_integer('roi_num_samples', 128, 'RoIs sampled per image for the head.')
  flags.DEFINE_float('roi_fg_fraction', 0.25, 'Largest foreground fraction of sampled RoIs.')
  flags.DEFINE_float('roi_bg_iou_lo', config_lib.ROI_BG_IOU_LO,
                    'Background RoIs have IoU in [this, 0.5).')
  flags.DEFINE_float('score_threshold', 0.05, 'Detections scoring at most this are dropped.')
  flags.DEFINE_float('detection_nms_iou', config_lib.DETECTION_NMS_IOU,
                     "Per-class NMS IoU of the detections (the reference's 0.3; crowded, "
                     'overlapping objects keep more at 0.5).')
  flags.DEFINE_integer('max_detections', 100, 'Detections per image.')
  flags.DEFINE_enum('precision', 'float32', list(PRECISIONS),
                    "Keras dtype policy: float32, mixed_float16 (GPUs: float16 compute, "
                    "loss scaling in training) or mixed_bfloat16 (bfloat16 compute: GPUs, "
                    "and CPUs with AVX512-BF16 / AMX, where oneDNN has bfloat16 kernels "
                    "faster than its float32 ones). Variables stay float32, so checkpoints load "
                    "under any of them; evaluate.py / export.py / predict.py read the "
                    "run's value unless given one.")
  flags.DEFINE_enum('detection_nms_method', 'auto', list(detection_generator.NMS_METHODS),
                    "The detection head's per-class NMS: tiled (all classes and images "
                    "at once in plain ops: fast on GPUs and under XLA; batched: the same "
                    "in one tile), kernel (TF's NMS kernel one class after another: fast "
                    "on CPUs) or auto (tiled under --jit_compile or when a GPU / TPU is "
                    "visible when the model is traced). Same detections. For export.py: "
                    "name the serving machine's kind when exporting on another kind.")
  flags.DEFINE_enum('proposal_nms_method', 'auto', ['auto', 'kernel', 'tiled'],
                    "The proposal layer's NMS (12000 -> 2000 boxes per image in training): "
                    "tiled (plain ops in fixed-size tiles, what XLA compiles well: GPUs, "
                    "TPUs, --jit_compile, and CPUs for 1000+ kept boxes), kernel (TF's "
                    "NMS kernel: fast on CPUs without XLA for fewer boxes) or auto (tiled "
                    "under --jit_compile, when a GPU / TPU is visible when the model is "
                    "traced, or from 1000 kept boxes on; kernel else). Same proposals.")
  splits = flags.DEFINE_string(
      'inference_splits', 'auto',
      "Inference runs each batch as this many sub-batches that TensorFlow executes at the "
      "same time (faster on CPUs: idle cores get the other sub-batch's work; same "
      "detections): a positive integer, or auto (2 on CPUs, 1 when a GPU or TPU is visible "
      "when the model is traced). For export.py: name the serving machine's kind when "
      "exporting on another kind.")
  # By its holder: the validator goes to the FlagValues the flag was defined in.
  flags.register_validator(splits, valid_inference_splits,
                           message="expected 'auto' or a positive integer")
  flags.DEFINE_bool('compile_backbone', False, 'Run the backbone XLA-compiled even when the '
                    'rest is not (faster VGG16 / ResNet convolutions on CPUs; not for '
                    'MobileNet). Exports ignore it.')


def define_train_flags():
  """train.py's own flags: the `config.TrainConfig` fields (and --mixed_precision)."""
  from faster_rcnn_tf.training import distribute
  from faster_rcnn_tf.training import optimizer
  flags.DEFINE_string('model_dir', None, 'Folder for checkpoints, run_config.json and '
                      'summaries.')
  flags.DEFINE_integer('num_steps', 70000, 'Training steps (global batches).')
  flags.DEFINE_integer('batch_size', 1, 'Global batch size (split across replicas).')
  flags.DEFINE_float('learning_rate', 0.001, 'Base learning rate.')
  flags.DEFINE_enum('optimizer', 'sgd', list(optimizer.OPTIMIZERS),
                    "'sgd' (the reference) or 'adam'.")
  flags.DEFINE_float('momentum', 0.9, 'SGD momentum (Adam: beta_1).')
  flags.DEFINE_float('weight_decay', 1e-4, 'L2 weight decay on kernels (not biases / norms).')
  flags.DEFINE_bool('double_bias_lr', True, 'Biases learn at twice the learning rate.')
  flags.DEFINE_list('lr_decay_steps', ['50000'], 'Steps at which the rate is multiplied by '
                    '--lr_decay_factor.')
  flags.DEFINE_float('lr_decay_factor', 0.1, 'Step decay factor.')
  flags.DEFINE_integer('warmup_steps', 0, 'Linear warm-up steps (0: none).')
  flags.DEFINE_float('clip_grad_norm', 0.0, 'Global gradient norm clip (0: none).')
  flags.DEFINE_enum('strategy', 'default', list(distribute.STRATEGIES),
                    'tf.distribute strategy.')
  flags.DEFINE_string('tpu', '', 'TPU address for --strategy=tpu.')
  flags.DEFINE_integer('cpu_devices', 0, 'Split the CPU into this many logical devices '
                       '(to run --strategy=mirrored without GPUs).')
  flags.DEFINE_bool('mixed_precision', False, 'Shorthand for --precision=mixed_float16.')
  flags.DEFINE_bool('jit_compile', False, 'Compile the training step with XLA. The NMS '
                    "stages then take ops/nms.py's tiled plain-ops form (nms methods "
                    "'auto'), not TF's NMS kernel, which XLA lowers to a slow loop.")
  flags.DEFINE_integer('seed', 0, 'Random seed (sampling, shuffling, flips, '
                       'initialization).')
  flags.DEFINE_bool('deterministic', False, 'Deterministic ops and a data order that a '
                    'resumed run reproduces exactly.')
  flags.DEFINE_integer('eval_every', 0, 'Evaluate every N steps and keep the best '
                       'checkpoint (0: only at the end).')
  flags.DEFINE_integer('checkpoint_every', 1000, 'Checkpoint every N steps.')
  flags.DEFINE_integer('keep_checkpoints', 5, 'Recent checkpoints kept.')
  flags.DEFINE_integer('log_every', 10, 'Progress line every N steps.')
  flags.DEFINE_integer('summary_every', 50, 'TensorBoard scalars every N steps.')
  flags.DEFINE_bool('final_eval', True, 'Evaluate on --eval_split after training.')
  flags.DEFINE_integer('eval_batch_size', 4, 'Images per evaluation batch.')
  flags.DEFINE_integer('max_eval_images', 0, 'Evaluate on at most this many images '
                       '(0: all).')
  flags.DEFINE_integer('stop_after_steps', 0, 'Testing aid: exit after this '
                       'many steps of this invocation without a final checkpoint (0: off).')
  define_input_service_flags()


DEFINERS = (define_data_flags, define_model_flags, define_train_flags)


def new_flag_values(definers=DEFINERS):
  """A fresh absl FlagValues holding the flags `definers` define (default: all of train.py's
  configuration flags); the global flags.FLAGS is left alone."""
  flag_values = flags.FlagValues()

  def bound(name):
    fn = getattr(flags, name)
    return functools.partial(fn, flag_values=flag_values) if name.startswith('DEFINE') else fn

  module = sys.modules[__name__]
  shim = types.SimpleNamespace(**{n: bound(n) for n in dir(flags) if not n.startswith('_')})
  real = module.flags
  module.flags = shim
  try:
    for define in definers:
      define()
  finally:
    module.flags = real
  return flag_values


def flag_name(arg):
  """'--name=value' / '--name' / '-name' -> 'name'; None for a non-flag argument."""
  if not arg.startswith('-') or arg in ('-', '--'):
    return None
  return arg.lstrip('-').split('=', 1)[0]


def _defined(flag_values, name):
  """Whether an argument name sets a flag of flag_values ('noflip' sets 'flip')."""
  if name in flag_values:
    return True
  return name.startswith('no') and name[2:] in flag_values and isinstance(
      flag_values[name[2:]], flags.BooleanFlag)


def file_args(flag_values, path):
  """The arguments of flagfile `path` (nested --flagfile lines expanded) that name flags
  of flag_values; lines naming other flags are left out."""
  args = flag_values.read_flags_from_files([f'--flagfile={path}'], force_gnu=False)
  return [a for a in args if flag_name(a) is not None and _defined(flag_values, flag_name(a))]


def parse_argv(flag_values, argv, prog):
  """absl `flags_parser` for evaluate.py, export.py and predict.py.

  Like absl's own parser, except that the lines of a --flagfile naming flags this script
  does not define are skipped, so a training config (configs/*.cfg, with --num_steps,
  --learning_rate, ...) can be given to every script; on the command line itself an
  unknown flag is an error. A flag error prints one line and exits with status 2.
  Returns the positional arguments, argv[0] first.
  """
  args = []
  rest = list(argv[1:])
  i = 0
  try:
    while i < len(rest):
      arg = rest[i]
      if arg == '--':
        args.extend(rest[i:])
        break
      if flag_name(arg) == 'flagfile':
        if '=' not in arg and i + 1 < len(rest):  # '--flagfile FILE'
          arg = f'--flagfile={rest[i + 1]}'
          i += 1
        args.extend(file_args(flag_values, arg.split('=', 1)[1]))
      else:
        args.append(arg)
      i += 1
    return flag_values([argv[0] if argv else prog, *args])
  except (flags.Error, OSError) as e:
    print(f'{prog}: error: {e}\nPass --help to see the flags.', file=sys.stderr)
    sys.exit(2)


PRECISIONS = ('float32', 'mixed_float16', 'mixed_bfloat16')


def valid_inference_splits(value):
  """Whether --inference_splits has a value `batch_splitting.resolve_splits` takes."""
  try:
    batch_splitting.resolve_splits(value, accelerator_visible=False)
  except ValueError:
    return False
  return True


def resolve_precision(f):
  """The Keras dtype policy name from --precision, or from a script's --mixed_precision
  shorthand (train.py, evaluate.py: the same as --precision=mixed_float16)."""
  precision = f.precision
  if 'mixed_precision' in f and f.mixed_precision:
    if precision not in ('float32', 'mixed_float16'):
      raise ValueError(f'--mixed_precision means --precision=mixed_float16, but '
                       f'--precision={precision} was given too')
    precision = 'mixed_float16'
  return precision


def apply_precision(f):
  """Sets Keras' global dtype policy from the flags (call before building the model);
  returns the policy name."""
  import keras
  precision = resolve_precision(f)
  keras.mixed_precision.set_global_policy(precision)
  return precision


def check_dataset_path(spec):
  """Raises ValueError naming --dataset when a folder or file it points at is missing."""
  kind, _, rest = spec.partition(':')
  if kind in ('voc', 'yolo') and not os.path.isdir(rest):
    raise ValueError(f'--dataset={spec}: {kind.upper()} folder {rest!r} does not exist')
  if kind == 'coco':
    ann = rest.split(':')[0]
    if not os.path.isfile(ann):
      raise ValueError(f'--dataset={spec}: COCO annotations file {ann!r} does not exist')
