"""A run's configuration: what train.py was asked to do, as one typed object.

`RunConfig` holds four groups:
  ModelConfig      the network's hyperparameters: what a checkpoint's variables and the
                   detections depend on;
  ExecutionConfig  how the same network is executed (numeric precision, XLA, NMS kernel,
                   sub-batches, batch norm folding): any value gives the same detections
                   up to rounding, so evaluation or export may pick another;
  DataConfig       the dataset, its splits and the input resizing;
  TrainConfig      the solver, the schedule, checkpointing and evaluation during training.

Every field is named after the command-line flag that sets it (faster_rcnn_tf.config_flags,
train.py), and its default is that flag's default (tests/test_config.py checks both), so
`RunConfig.from_flags` needs no table: a new flag becomes a new field of the same name.
train.py writes the resolved configuration into its --model_dir as run_config.json
(`RunConfig.to_json`); `faster_rcnn_tf.runs` reads it back.
"""

import dataclasses
import json
from typing import Optional, Sequence, Tuple, Union

from faster_rcnn_tf.execution import Execution

FORMAT_VERSION = 1

# The background RoIs of the second stage have IoU in [ROI_BG_IOU_LO, roi_bg_iou_hi) with
# every ground-truth box. The reference's VGG16 configuration uses 0.0 (its library
# default, 0.1, leaves out proposals touching no object, which then never teach the head
# what plain background looks like); one value for the layer, the model and the flag.
ROI_BG_IOU_LO = 0.0

# Per-class NMS IoU of the detections: the reference's TEST.NMS; one value for the layer,
# the model and the flag.
DETECTION_NMS_IOU = 0.3


class ConfigError(ValueError):
  """An unreadable or inconsistent configuration; the message names the file and field."""


def _numbers(name, values, kind):
  """tuple of kind (int or float) from a list of numbers or strings ('' items skipped)."""
  try:
    return tuple(kind(v) for v in values if str(v).strip() != '')
  except (TypeError, ValueError):
    raise ConfigError(f'--{name} must be {kind.__name__}s, got {list(values)}') from None


AUTO_ANCHORS = 'auto'


def parse_auto_anchors(values, default_count=3):
  """None for a list of numbers; the count N for ['auto'] (default_count) or ['auto:N'].

  --anchor_scales / --anchor_ratios 'auto' ask train.py to fit the anchors to the
  training split's boxes (`data.anchor_fit`). Raises ValueError for anything else.
  """
  if len(values) == 1 and str(values[0]).startswith(AUTO_ANCHORS):
    _, _, count = str(values[0]).partition(':')
    if not count:
      return default_count
    if not count.isdigit() or int(count) < 1:
      raise ValueError(f"expected 'auto', 'auto:N' (N >= 1) or numbers, got {values[0]!r}")
    return int(count)
  try:
    [float(v) for v in values]
  except ValueError:
    raise ValueError(f"expected 'auto', 'auto:N' or numbers, got {','.join(values)}")
  return None


def _anchor_values(name, values):
  """('auto[:N]',) kept as given (train.py replaces it), else a tuple of floats."""
  values = tuple(values)
  if len(values) == 1 and str(values[0]).startswith(AUTO_ANCHORS):
    try:
      parse_auto_anchors(values)
    except ValueError as e:
      raise ConfigError(f'--{name}: {e}') from None
    return (str(values[0]),)
  return _numbers(name, values, float)


def min_sizes_of(value):
  """A --min_size value (int, 'A,B,...' or a sequence) as a tuple of positive ints.

  One size: the shorter side every image is resized to; several: multi-scale training
  (one drawn per batch). Raises ConfigError naming --min_size.
  """
  if isinstance(value, (list, tuple)):
    items = list(value)
  elif isinstance(value, str):
    items = [v for v in value.split(',') if v.strip()]
  else:
    items = [value]
  try:
    sizes = tuple(int(v) for v in items)
  except (TypeError, ValueError):
    sizes = ()
  if not sizes or min(sizes) <= 0 or any(
      isinstance(v, float) and v != int(v) for v in items):
    raise ConfigError(f'--min_size: expected positive integers separated by commas, '
                      f'got {value!r}')
  return sizes


# Photometric augmentation strengths (DataConfig fields, flags of the same names): the
# largest value each accepts; 0 turns it off.
AUGMENT_LIMITS = (('brightness', 1.0), ('contrast', 1.0), ('saturation', 1.0), ('hue', 0.5))


def scale_jitter_of(values):
  """() or (LOW, HIGH) floats with 0 < LOW <= HIGH from --scale_jitter; ConfigError else."""
  jitter = _numbers('scale_jitter', values, float)
  if jitter and (len(jitter) != 2 or not 0.0 < jitter[0] <= jitter[1]):
    raise ConfigError(f'--scale_jitter: expected two numbers LOW,HIGH with 0 < LOW <= HIGH, '
                      f'got {list(values)}')
  return jitter


@dataclasses.dataclass
class ModelConfig:
  """FasterRCNN hyperparameters (see `faster_rcnn_tf.model.FasterRCNN` for each)."""
  backbone: str = 'vgg16'
  # 'none', 'imagenet' or a weights file: only where the training started from.
  backbone_weights: str = 'none'
  freeze_early_layers: bool = True
  train_batch_norm: bool = False
  # Numbers, or ('auto',) / ('auto:N',) until train.py fits them to the training split
  # (`training.run.fit_anchors`); a run's run_config.json holds the numbers it chose.
  anchor_scales: Tuple[Union[float, str], ...] = (8.0, 16.0, 32.0)
  anchor_ratios: Tuple[Union[float, str], ...] = (0.5, 1.0, 2.0)
  anchor_base_size: int = 16
  rpn_channels: int = 512
  train_pre_nms_topk: int = 12000
  train_post_nms_topk: int = 2000
  test_pre_nms_topk: int = 6000
  test_post_nms_topk: int = 300
  rpn_num_samples: int = 256
  roi_num_samples: int = 128
  roi_fg_fraction: float = 0.25
  roi_bg_iou_lo: float = ROI_BG_IOU_LO
  score_threshold: float = 0.05
  detection_nms_iou: float = DETECTION_NMS_IOU
  max_detections: int = 100

  def __post_init__(self):
    self.anchor_scales = _anchor_values('anchor_scales', self.anchor_scales)
    self.anchor_ratios = _anchor_values('anchor_ratios', self.anchor_ratios)

  @property
  def auto_anchors(self):
    """Whether anchor_scales or anchor_ratios is still 'auto[:N]'."""
    return any(parse_auto_anchors(v) is not None
               for v in (self.anchor_scales, self.anchor_ratios))


def _execution_post_init(self):
  # A flag gives inference_splits as a string ('auto' or '2'); JSON keeps it so.
  self.inference_splits = str(self.inference_splits)


def _to_execution(self) -> Execution:
  """The `execution.Execution` these fields describe (precision left out)."""
  return Execution(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Execution)})


# precision plus the fields of `execution.Execution`, which documents them: one list of
# execution options for the model, the flags and run_config.json.
ExecutionConfig = dataclasses.make_dataclass(
    'ExecutionConfig',
    [('precision', str, 'float32')] +
    [(f.name, f.type, f.default) for f in dataclasses.fields(Execution)],
    namespace={'__post_init__': _execution_post_init, 'to_execution': _to_execution,
               '__module__': __name__,
               '__doc__': """How the model runs; none of these changes the detections beyond rounding.

  precision: Keras dtype policy ('float32', 'mixed_float16', 'mixed_bfloat16'); the
    variables stay float32, so a checkpoint loads under any of them.
  The other fields are those of `execution.Execution` (documented there).
  """})


@dataclasses.dataclass
class DataConfig:
  """The dataset spec (see `faster_rcnn_tf.data.registry`), its splits, resizing and
  training augmentation.

  min_size: an int, or a tuple of several for multi-scale training (one drawn per
    batch); evaluation, export and prediction resize to the one `inference_min_size`.
  test_min_size: that inference size; 0: the largest min_size (as the reference
    implementations, which train multi-scale and test at the largest scale).
  brightness, contrast, saturation, hue: photometric augmentation strengths (0: off;
    `data.augment`); scale_jitter: () or (LOW, HIGH), the training resize factor times a
    random factor from that range, then a crop of at most the usual size.
  """
  dataset: str = 'shapes'
  train_split: str = 'train'
  eval_split: str = 'test'
  data_dir: Optional[str] = None
  classes: Optional[Tuple[str, ...]] = None
  # Data without split files: the share of images a hash of their names puts in 'val'.
  val_fraction: float = 0.1
  # tfrecord: datasets: a label_map.pbtxt naming the classes (None: the records' texts).
  label_map: Optional[str] = None
  min_size: Union[int, Tuple[int, ...]] = 600
  test_min_size: int = 0
  max_size: int = 1000
  max_boxes: int = 100
  flip: bool = True
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  hue: float = 0.0
  scale_jitter: Tuple[float, ...] = ()
  skip_difficult: bool = True
  shapes_image_size: int = 128
  shapes_train_images: int = 2000
  shapes_test_images: int = 200
  # train.py: grpc://HOST:PORT of a tf.data service running the input pipeline ('' off),
  # and how its workers share the data ('dynamic' or 'off').
  data_service: str = ''
  data_service_mode: str = 'dynamic'

  def __post_init__(self):
    if self.classes is not None:
      self.classes = tuple(str(c) for c in self.classes)
    sizes = min_sizes_of(self.min_size)
    self.min_size = sizes[0] if len(sizes) == 1 else sizes
    if self.test_min_size < 0:
      raise ConfigError(f'--test_min_size must be 0 or positive, got {self.test_min_size}')
    for name, high in AUGMENT_LIMITS:
      value = getattr(self, name)
      if not 0.0 <= value <= high:
        raise ConfigError(f'--{name} must be in [0, {high}], got {value}')
    self.scale_jitter = scale_jitter_of(self.scale_jitter)

  @property
  def train_min_sizes(self):
    """The training shorter sides: tuple of ints."""
    return min_sizes_of(self.min_size)

  @property
  def inference_min_size(self):
    """The one shorter side for evaluation, export and prediction: int."""
    return self.test_min_size or max(self.train_min_sizes)


@dataclasses.dataclass
class TrainConfig:
  """The training run: solver, schedule, distribution, checkpoints, evaluation."""
  model_dir: Optional[str] = None
  num_steps: int = 70000
  batch_size: int = 1
  learning_rate: float = 0.001
  optimizer: str = 'sgd'
  momentum: float = 0.9
  weight_decay: float = 1e-4
  double_bias_lr: bool = True
  lr_decay_steps: Tuple[int, ...] = (50000,)
  lr_decay_factor: float = 0.1
  warmup_steps: int = 0
  clip_grad_norm: float = 0.0
  strategy: str = 'default'
  tpu: str = ''
  cpu_devices: int = 0
  jit_compile: bool = False
  seed: int = 0
  deterministic: bool = False
  eval_every: int = 0
  checkpoint_every: int = 1000
  keep_checkpoints: int = 5
  log_every: int = 10
  summary_every: int = 50
  final_eval: bool = True
  eval_batch_size: int = 4
  max_eval_images: int = 0
  stop_after_steps: int = 0

  def __post_init__(self):
    self.lr_decay_steps = _numbers('lr_decay_steps', self.lr_decay_steps, int)


SECTIONS = (('model', ModelConfig), ('execution', ExecutionConfig), ('data', DataConfig),
            ('train', TrainConfig))


def _section_from_flags(cls, flag_values, base=None):
  """cls from the flags of the same names; with `base`, only flags set explicitly
  (on the command line or in a flagfile) replace base's values. A value the section
  refuses raises ConfigError naming the flag."""
  values = {}
  for field in dataclasses.fields(cls):
    name = field.name
    if name not in flag_values:
      if base is not None:
        values[name] = getattr(base, name)
      continue
    if base is not None and not flag_values[name].present:
      values[name] = getattr(base, name)
    else:
      values[name] = flag_values[name].value
  try:
    return cls(**values)
  except (TypeError, ValueError) as e:
    if isinstance(e, ConfigError):
      raise
    bad = [n for n in values if n in flag_values and flag_values[n].present]
    raise ConfigError(f'{cls.__name__}: {e} (flags given: '
                      f'{", ".join("--" + n for n in bad) or "none"})') from None


@dataclasses.dataclass
class RunConfig:
  """Everything that describes a training run.

  class_names: the K foreground class names; class id i (1..K) is class_names[i - 1].
    Filled in by train.py from the training split (empty until the data is read).
  """
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  execution: ExecutionConfig = dataclasses.field(default_factory=ExecutionConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  class_names: Tuple[str, ...] = ()

  def __post_init__(self):
    self.class_names = tuple(str(c) for c in self.class_names)

  @property
  def num_classes(self):
    return len(self.class_names)

  @classmethod
  def from_flags(cls, flag_values, base=None):
    """The configuration from parsed absl flags.

    Args:
      flag_values: an absl FlagValues (flags.FLAGS in a script). Fields whose flag is not
        defined there keep their default (or base's value).
      base: None, or a RunConfig (a run's saved configuration) to start from: then only
        the flags given explicitly replace its values, so a script's command line
        overrides the run's settings and its other flag defaults do not.
    Returns:
      RunConfig (class_names from base, else empty). The --mixed_precision shorthand of
      train.py / evaluate.py is folded into execution.precision.
    """
    sections = {name: _section_from_flags(section_cls, flag_values,
                                          getattr(base, name) if base else None)
                for name, section_cls in SECTIONS}
    if 'mixed_precision' in flag_values and flag_values.mixed_precision:
      from faster_rcnn_tf import config_flags
      try:
        sections['execution'].precision = config_flags.resolve_precision(flag_values)
      except ValueError as e:
        raise ConfigError(str(e)) from None
    return cls(class_names=base.class_names if base else (), **sections)

  def to_dict(self):
    """A JSON-ready dict: {'format_version', 'class_names', 'model', ...}."""
    out = {'format_version': FORMAT_VERSION, 'class_names': list(self.class_names)}
    for name, _ in SECTIONS:
      out[name] = {k: list(v) if isinstance(v, tuple) else v
                   for k, v in dataclasses.asdict(getattr(self, name)).items()}
    return out

  def to_json(self):
    return json.dumps(self.to_dict(), indent=1)

  @classmethod
  def from_dict(cls, data, where='run configuration'):
    """Inverse of `to_dict`. Fields missing in `data` take their defaults; a field this
    version does not know, or a value of the wrong kind, raises ConfigError naming it."""
    if not isinstance(data, dict):
      raise ConfigError(f'{where}: expected a JSON object')
    version = data.get('format_version', FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
      raise ConfigError(f'{where}: format_version {version!r} is newer than this '
                        f'software reads ({FORMAT_VERSION}); update faster_rcnn_tf')
    known = {'format_version', 'class_names'} | {name for name, _ in SECTIONS}
    unknown = sorted(set(data) - known)
    if unknown:
      raise ConfigError(f'{where}: unknown section {unknown[0]!r}')
    sections = {}
    for name, section_cls in SECTIONS:
      values = data.get(name, {})
      if not isinstance(values, dict):
        raise ConfigError(f'{where}: "{name}" must be an object')
      names = {f.name for f in dataclasses.fields(section_cls)}
      bad = sorted(set(values) - names)
      if bad:
        raise ConfigError(f'{where}: unknown field "{name}.{bad[0]}"')
      try:
        sections[name] = section_cls(**values)
      except (TypeError, ValueError) as e:
        raise ConfigError(f'{where}: "{name}": {e}') from None
    names = data.get('class_names', [])
    if not isinstance(names, list):
      raise ConfigError(f'{where}: "class_names" must be a list')
    return cls(class_names=names, **sections)

  @classmethod
  def from_json(cls, text, where='run configuration'):
    try:
      data = json.loads(text)
    except ValueError as e:
      raise ConfigError(f'{where}: not valid JSON ({e})') from None
    return cls.from_dict(data, where)

  def replace(self, **sections):
    """A copy with whole sections (or class_names) replaced."""
    return dataclasses.replace(self, **sections)


def model_kwargs(config: RunConfig, pretrained: bool = True,
                 serving: bool = False) -> dict:
  """FasterRCNN keyword arguments for a run configuration.

  Args:
    config: a RunConfig with class_names filled in.
    pretrained: load model.backbone_weights (training from them); False when every
      weight comes from a checkpoint.
    serving: for a SavedModel: compile_backbone off (TF Serving runs XLA on CPUs only when
      told to).
  """
  m, e = config.model, config.execution
  if not config.class_names:
    raise ConfigError('the run configuration has no class names')
  if m.auto_anchors:
    raise ConfigError("--anchor_scales / --anchor_ratios 'auto' are resolved by train.py "
                      "from the training split; give numbers (a run's run_config.json "
                      'has the values it chose)')
  weights = m.backbone_weights if pretrained else None
  return dict(
      num_classes=config.num_classes, backbone=m.backbone,
      backbone_weights=None if weights in (None, '', 'none') else weights,
      freeze_early_layers=m.freeze_early_layers, train_batch_norm=m.train_batch_norm,
      anchor_base_size=m.anchor_base_size, anchor_scales=m.anchor_scales,
      anchor_ratios=m.anchor_ratios, rpn_channels=m.rpn_channels,
      train_pre_nms_topk=m.train_pre_nms_topk, train_post_nms_topk=m.train_post_nms_topk,
      test_pre_nms_topk=m.test_pre_nms_topk, test_post_nms_topk=m.test_post_nms_topk,
      rpn_num_samples=m.rpn_num_samples, roi_num_samples=m.roi_num_samples,
      roi_fg_fraction=m.roi_fg_fraction, roi_bg_iou_lo=m.roi_bg_iou_lo,
      score_threshold=m.score_threshold, detection_nms_iou=m.detection_nms_iou,
      max_detections=m.max_detections, execution=e.to_execution(),
      compile_backbone=False if serving else None,
      class_names=list(config.class_names), min_size=config.data.inference_min_size,
      max_size=config.data.max_size)


def source_kwargs(data: DataConfig) -> dict:
  """Keyword arguments for `data.registry.get_source` (without `classes`)."""
  return dict(data_dir=data.data_dir, val_fraction=data.val_fraction,
              label_map=data.label_map or None,
              shapes_options=dict(image_size=data.shapes_image_size,
                                  train_images=data.shapes_train_images,
                                  test_images=data.shapes_test_images))


def pipeline_kwargs(data: DataConfig) -> dict:
  """Keyword arguments for the training `data.pipeline.make_dataset`: the resizing (every
  training size), box padding and augmentation."""
  return dict(min_size=data.train_min_sizes, max_size=data.max_size,
              max_boxes=data.max_boxes, brightness=data.brightness,
              contrast=data.contrast, saturation=data.saturation, hue=data.hue,
              scale_jitter=data.scale_jitter or None)


def fields_of(section_cls) -> Sequence[str]:
  """The field (= flag) names of a section class."""
  return [f.name for f in dataclasses.fields(section_cls)]
