"""Command-line flags shared by train.py, evaluate.py, export.py and predict.py.

This is the one place the configuration is read: the scripts turn flags into plain
keyword arguments (`model_kwargs`, `data_kwargs`) and pass them down. Every flag can be
set in a `--flagfile` (one `--name=value` a line; `#` starts a comment).
"""

import os

from absl import flags

from faster_rcnn_tf import backbones
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
  flags.DEFINE_integer('min_size', 600, 'Resize so the shorter side is this many pixels...')
  flags.DEFINE_integer('max_size', 1000, '...and the longer side at most this many.')
  flags.DEFINE_integer('max_boxes', 100, 'Ground-truth boxes kept per image (padding size).')
  flags.DEFINE_bool('flip', True, 'Random horizontal flips in training.')
  flags.DEFINE_bool('skip_difficult', True, 'Leave difficult objects out of training.')
  flags.DEFINE_integer('shapes_image_size', 128, 'Side of the built-in shapes images.')
  flags.DEFINE_integer('shapes_train_images', 2000, 'Images in the shapes train split.')
  flags.DEFINE_integer('shapes_test_images', 200, 'Images in the shapes test split.')


def define_input_service_flags():
  """train.py's flags for running the input pipeline on a tf.data service."""
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
  _floats('anchor_scales', (8, 16, 32), 'Anchor scales (times anchor_base_size).')
  _floats('anchor_ratios', (0.5, 1.0, 2.0), 'Anchor aspect ratios (height / width).')
  flags.DEFINE_integer('anchor_base_size', 16, 'Anchor base size in pixels.')
  flags.DEFINE_integer('rpn_channels', 512, "Width of the RPN's 3x3 conv.")
  flags.DEFINE_integer('train_pre_nms_topk', 12000, 'Proposals kept before NMS (training).')
  flags.DEFINE_integer('train_post_nms_topk', 2000, 'Proposals kept after NMS (training).')
  flags.DEFINE_integer('test_pre_nms_topk', 6000, 'Proposals kept before NMS (inference).')
  flags.DEFINE_integer('test_post_nms_topk', 300, 'Proposals kept after NMS (inference).')
  flags.DEFINE_integer('rpn_num_samples', 256, 'Anchors sampled per image.')
  flags.DEFINE_integer('roi_num_samples', 128, 'RoIs sampled per image for the head.')
  flags.DEFINE_float('roi_fg_fraction', 0.25, 'Largest foreground fraction of sampled RoIs.')
  flags.DEFINE_float('roi_bg_iou_lo', 0.0, 'Background RoIs have IoU in [this, 0.5).')
  flags.DEFINE_float('score_threshold', 0.05, 'Detections scoring at most this are dropped.')
  flags.DEFINE_integer('max_detections', 100, 'Detections per image.')
  flags.DEFINE_enum('precision', 'float32', list(PRECISIONS),
                    "Keras dtype policy: float32, mixed_float16 (GPUs: float16 compute, "
                    "loss scaling in training) or mixed_bfloat16 (bfloat16 compute: GPUs, "
                    "and CPUs with AVX512-BF16 / AMX, where oneDNN runs it several times "
                    "faster than float32). Variables stay float32, so checkpoints load "
                    "under any of them; evaluate.py / export.py / predict.py read the "
                    "run's value unless given one.")
  flags.DEFINE_enum('detection_nms_method', 'auto', list(detection_generator.NMS_METHODS),
                    "The detection head's per-class NMS: batched (all classes and images "
                    "at once: fast on GPUs), kernel (TF's NMS kernel one class after "
                    "another: fast on CPUs) or auto (batched when a GPU is visible when "
                    "the model is traced). Same detections. For export.py: name the "
                    "serving machine's kind when exporting on another kind.")
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


def model_kwargs(f, num_classes):
  """FasterRCNN keyword arguments from parsed flags."""
  weights = f.backbone_weights
  return dict(
      num_classes=num_classes, backbone=f.backbone,
      backbone_weights=None if weights in ('', 'none') else weights,
      freeze_early_layers=f.freeze_early_layers, train_batch_norm=f.train_batch_norm,
      anchor_base_size=f.anchor_base_size,
      anchor_scales=tuple(float(v) for v in f.anchor_scales),
      anchor_ratios=tuple(float(v) for v in f.anchor_ratios),
      rpn_channels=f.rpn_channels, train_pre_nms_topk=f.train_pre_nms_topk,
      train_post_nms_topk=f.train_post_nms_topk, test_pre_nms_topk=f.test_pre_nms_topk,
      test_post_nms_topk=f.test_post_nms_topk, rpn_num_samples=f.rpn_num_samples,
      roi_num_samples=f.roi_num_samples, roi_fg_fraction=f.roi_fg_fraction,
      roi_bg_iou_lo=f.roi_bg_iou_lo, score_threshold=f.score_threshold,
      max_detections=f.max_detections, detection_nms_method=f.detection_nms_method,
      compile_backbone=f.compile_backbone, inference_splits=f.inference_splits)


def source_kwargs(f):
  """Keyword arguments for `data.registry.get_source` from parsed flags."""
  return dict(classes=f.classes, data_dir=f.data_dir, val_fraction=f.val_fraction,
              label_map=f.label_map or None,
              shapes_options=dict(image_size=f.shapes_image_size,
                                  train_images=f.shapes_train_images,
                                  test_images=f.shapes_test_images))


def pipeline_kwargs(f):
  """Keyword arguments for `data.pipeline.make_dataset` from parsed flags."""
  return dict(min_size=f.min_size, max_size=f.max_size, max_boxes=f.max_boxes)


def check_dataset_path(spec):
  """Raises ValueError naming --dataset when a folder or file it points at is missing."""
  kind, _, rest = spec.partition(':')
  if kind in ('voc', 'yolo') and not os.path.isdir(rest):
    raise ValueError(f'--dataset={spec}: {kind.upper()} folder {rest!r} does not exist')
  if kind == 'coco':
    ann = rest.split(':')[0]
    if not os.path.isfile(ann):
      raise ValueError(f'--dataset={spec}: COCO annotations file {ann!r} does not exist')
