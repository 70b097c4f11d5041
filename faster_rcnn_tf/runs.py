"""Loading a trained model: a training run folder, a `.keras` file or a SavedModel.

    model = faster_rcnn_tf.load_model('runs/shapes_quickstart')   # the latest checkpoint
    model = faster_rcnn_tf.load_model('runs/shapes_quickstart', checkpoint='best')

A training run folder (train.py's --model_dir) holds:
  run_config.json        the run's `config.RunConfig` (model, execution, data, training
                         settings and the class names)
  flags.cfg              the same flags as an absl flagfile, for people to read
  checkpoint, ckpt-N.*   tf.train.Checkpoint(model=..., optimizer=...) files
  best/                  optionally the best checkpoint by evaluation
Folders written before run_config.json existed hold flags.cfg and classes.json instead;
`read_run_config` reads those through the same flag definitions and `RunConfig.from_flags`
as train.py, and `write_run_config` converts such a folder.

A SavedModel is export.py's layout: BASE/N/saved_model.pb (TF Serving's model base
path) or the version folder N itself; BASE means its highest version.

Every failure raises `RunError` with one line naming the path and what is wrong.
"""

import dataclasses
import json
import os
import re
from typing import Any, Optional, Sequence

from faster_rcnn_tf import config as config_lib

RUN_CONFIG_FILE = 'run_config.json'
FLAGS_FILE = 'flags.cfg'
CLASSES_FILE = 'classes.json'
SAVED_MODEL_FILE = 'saved_model.pb'
EXPORT_INFO_FILE = 'export_info.json'
KERAS_SUFFIX = '.keras'

_CLS_BIAS = 'model/cls_score/bias/.ATTRIBUTES/VARIABLE_VALUE'
_ITERATIONS = 'optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE'


class RunError(ValueError):
  """A missing or unusable run folder, checkpoint or saved model; one readable line."""


# ---- run folders and their configuration ----

def is_run_folder(path: str) -> bool:
  """Whether `path` is a folder holding run_config.json or (older runs) flags.cfg."""
  return os.path.isdir(path) and any(
      os.path.isfile(os.path.join(path, name)) for name in (RUN_CONFIG_FILE, FLAGS_FILE))


def find_run_folder(path: Optional[str]) -> Optional[str]:
  """The run folder a path belongs to: the path itself, or for a checkpoint prefix
  (RUN/ckpt-N, RUN/best/ckpt-N) or a checkpoint folder (RUN/best) the nearest folder
  above it that is a run folder. None when there is none."""
  if not path:
    return None
  folder = path if os.path.isdir(path) else os.path.dirname(path) or '.'
  if is_run_folder(folder):
    return folder
  # The folder above only for checkpoints (RUN/best), not for any folder inside a run.
  parent = os.path.dirname(os.path.abspath(folder))
  holds_checkpoints = (not os.path.isdir(path) or
                       os.path.isfile(os.path.join(folder, 'checkpoint')))
  return parent if holds_checkpoints and is_run_folder(parent) else None


def write_run_config(model_dir: str, config: config_lib.RunConfig) -> str:
  """Writes model_dir/run_config.json (atomically); returns its path."""
  from faster_rcnn_tf.fileio import atomic_write_text
  os.makedirs(model_dir, exist_ok=True)
  path = os.path.join(model_dir, RUN_CONFIG_FILE)
  atomic_write_text(path, config.to_json() + '\n')
  return path


def _read_class_names(model_dir):
  path = os.path.join(model_dir, CLASSES_FILE)
  if not os.path.isfile(path):
    raise RunError(f'{model_dir}: no {RUN_CONFIG_FILE} and no {CLASSES_FILE} (not a '
                   'train.py run folder)')
  try:
    with open(path, encoding='utf-8') as f:
      names = json.load(f)['class_names']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise RunError(f'{path}: cannot read class names ({type(e).__name__}: {e})') from None
  if not isinstance(names, list) or not names:
    raise RunError(f'{path}: "class_names" must be a non-empty list')
  return [str(n) for n in names]


def config_from_flagfile(path: str) -> config_lib.RunConfig:
  """A RunConfig from an absl flagfile of train.py's flags (an older run's flags.cfg).

  The file is parsed by the flag definitions train.py uses (`config_flags`), in a
  FlagValues of its own, then turned into a RunConfig by `RunConfig.from_flags`: the
  same path train.py takes. Lines naming other flags (absl's, TensorFlow's) are skipped.
  """
  from absl import flags
  from faster_rcnn_tf import config_flags
  flag_values = config_flags.new_flag_values()
  try:
    args = config_flags.file_args(flag_values, path)
    flag_values(['flags.cfg', *args])
  except (flags.Error, OSError) as e:
    raise RunError(f'{path}: {e}') from None
  try:
    return config_lib.RunConfig.from_flags(flag_values)
  except config_lib.ConfigError as e:
    raise RunError(f'{path}: {e}') from None


def read_run_config(model_dir: str) -> config_lib.RunConfig:
  """The RunConfig of a run folder: run_config.json, or for an older folder flags.cfg
  and classes.json. Raises RunError naming the folder or file."""
  if not os.path.isdir(model_dir):
    raise RunError(f'{model_dir}: no such folder')
  path = os.path.join(model_dir, RUN_CONFIG_FILE)
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      text = f.read()
    try:
      config = config_lib.RunConfig.from_json(text, where=path)
    except config_lib.ConfigError as e:
      raise RunError(str(e)) from None
    if not config.class_names:
      raise RunError(f'{path}: "class_names" is empty')
    return config
  flagfile = os.path.join(model_dir, FLAGS_FILE)
  if not os.path.isfile(flagfile):
    raise RunError(f'{model_dir}: no {RUN_CONFIG_FILE} (not a train.py run folder)')
  config = config_from_flagfile(flagfile)
  return config.replace(class_names=tuple(_read_class_names(model_dir)))


# ---- checkpoints ----

def resolve_checkpoint(model_dir: Optional[str], checkpoint: Optional[str] = None) -> str:
  """The checkpoint prefix to restore, checked to read back whole.

  Args:
    model_dir: the run folder (or None when `checkpoint` is a full path).
    checkpoint: None (the latest in model_dir), a folder (its latest, e.g. RUN/best) or
      a prefix (RUN/ckpt-6); a relative one is also looked for inside model_dir.
  Returns:
    str prefix (PREFIX.index exists). Raises RunError, also naming the files and the
    intact older checkpoints when the checkpoint is damaged
    (training/checkpoint_check.py).
  """
  from faster_rcnn_tf.training import checkpoint_check
  path = _find_checkpoint(model_dir, checkpoint)
  try:
    return checkpoint_check.require_intact(path)
  except checkpoint_check.DamagedCheckpointError as e:
    raise RunError(str(e)) from None


def _find_checkpoint(model_dir, checkpoint):
  import glob
  from faster_rcnn_tf.training import checkpoint_check
  if not checkpoint:
    if not model_dir or not os.path.isdir(model_dir):
      raise RunError(f'{model_dir}: no such folder')
    path = checkpoint_check.latest_listed(model_dir)
    if not path:
      raise RunError(f'{model_dir}: no checkpoint in the folder (train.py writes '
                     '"checkpoint" and ckpt-N files there)')
    return path
  candidates = [checkpoint]
  if model_dir and not os.path.isabs(checkpoint):
    candidates.append(os.path.join(model_dir, checkpoint))
  for candidate in candidates:
    if os.path.isdir(candidate):
      path = checkpoint_check.latest_listed(candidate)
      if path:
        return path
      raise RunError(f'checkpoint={checkpoint}: no checkpoint in folder {candidate} (no '
                     '"checkpoint" state file naming a ckpt-N)')
    if os.path.isfile(candidate + '.index') or glob.glob(glob.escape(candidate) + '.data-*'):
      return candidate  # data files alone: a damaged checkpoint, said by the caller
  also = f', also looked in {model_dir}' if model_dir else ''
  raise RunError(f'checkpoint={checkpoint}: not a checkpoint (no {checkpoint}.index{also}; '
                 'e.g. RUN_FOLDER/ckpt-1000 or RUN_FOLDER/best)')


def checkpoint_step(path: str) -> Optional[int]:
  """The training step of a checkpoint: the optimizer's iterations, else the ckpt-N number."""
  import tensorflow as tf
  try:
    reader = tf.train.load_checkpoint(path)
    if reader.has_tensor(_ITERATIONS):
      return int(reader.get_tensor(_ITERATIONS))
  except (tf.errors.OpError, ValueError):
    pass
  match = re.search(r'-(\d+)$', path)
  return int(match.group(1)) if match else None


def build_model(config: config_lib.RunConfig, pretrained: bool = False,
                serving: bool = False):
  """A FasterRCNN for `config` under its precision (sets Keras' global dtype policy).

  pretrained: load the configured backbone weights (False: every weight will come from
  a checkpoint); serving: see `config.model_kwargs`. Raises RunError for a configuration
  the model refuses.
  """
  import keras
  from faster_rcnn_tf.model import FasterRCNN
  keras.mixed_precision.set_global_policy(config.execution.precision)
  try:
    return FasterRCNN(**config_lib.model_kwargs(config, pretrained=pretrained,
                                                serving=serving))
  except (ValueError, OSError, config_lib.ConfigError) as e:
    raise RunError(f'cannot build the model of the configuration: {e}') from None


def restore_checkpoint(model, path: str, run_config: Optional[config_lib.RunConfig] = None,
                       class_names: Optional[Sequence[str]] = None):
  """Restores a FasterRCNN's weights from a train.py checkpoint (optimizer slots skipped).

  Raises RunError when the checkpoint cannot be read, was trained for another number of
  classes, or its variables do not fit the model (another backbone or head).
  run_config (the configuration of the checkpoint's run) and class_names (the model's)
  make the message name the likely cause.
  """
  import tensorflow as tf
  try:
    reader = tf.train.load_checkpoint(path)
  except (tf.errors.OpError, ValueError) as e:
    raise RunError(f'checkpoint {path}: cannot be read ({e})') from None
  names = f' ({", ".join(class_names)})' if class_names else ''
  if reader.has_tensor(_CLS_BIAS):
    trained = int(reader.get_variable_to_shape_map()[_CLS_BIAS][0]) - 1
    if trained != model.num_classes:
      raise RunError(f'checkpoint {path} was trained for {trained} classes, but the model '
                     f'has {model.num_classes}{names}: check --dataset / --classes')
  trained = run_config.model.backbone if run_config is not None else None
  if trained and trained != model.backbone_name:
    hint = f'its run was trained with --backbone={trained}'
  elif trained:
    hint = ("the backbone matches its run's, so another model setting differs (e.g. "
            '--rpn_channels, --anchor_scales, --anchor_ratios)')
  else:
    hint = 'was it trained with another --backbone or other model settings?'
  try:
    status = tf.train.Checkpoint(model=model).restore(path)
    status.expect_partial()  # The optimizer's slots are not needed.
    status.assert_existing_objects_matched()
  except (ValueError, AssertionError, tf.errors.OpError) as e:
    detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    # The failed restore stays pending; TensorFlow would list every unrestored value
    # when it is garbage collected, burying the one-line error below.
    tf.get_logger().setLevel('ERROR')
    raise RunError(f'checkpoint {path} does not fit the model (--backbone='
                   f'{model.backbone_name}, {model.num_classes} classes); {hint}. '
                   f'TensorFlow says: {detail}') from None
  return status


# ---- saved models ----

def resolve_saved_model(path: str) -> str:
  """The SavedModel folder: `path` itself when it holds saved_model.pb, else its highest
  numeric version sub-folder (TF Serving's BASE/N). Raises RunError when neither."""
  if os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
    return path
  if os.path.isdir(path):
    versions = [int(n) for n in os.listdir(path)
                if n.isdigit() and os.path.isfile(os.path.join(path, n, SAVED_MODEL_FILE))]
    if versions:
      return os.path.join(path, str(max(versions)))
  raise RunError(f'{path}: no {SAVED_MODEL_FILE} there nor in a numeric version folder')


def read_export_info(saved_model_dir: str) -> Optional[dict]:
  """export.py's export_info.json of a SavedModel folder, or None when it has none."""
  path = os.path.join(saved_model_dir, EXPORT_INFO_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise RunError(f'{path}: cannot be read ({e})') from None


class SavedModelSignatures:
  """An export.py SavedModel's two signatures, called like `DetectionModule`'s methods.

  serve_image_bytes(string [B]) and serve_images(uint8 [B, H, W, 3]) return the dict of
  `serving.export_module.OUTPUT_NAMES` (boxes normalized to the original image).
  """

  def __init__(self, loaded, path):
    from faster_rcnn_tf.serving import export_module as em
    import tensorflow as tf
    self.path = path
    signatures = getattr(loaded, 'signatures', {})
    for name in (em.SERVING_DEFAULT, em.DETECT_IMAGES):
      if name not in signatures:
        raise RunError(f'{path}: no {name!r} signature (it has {sorted(signatures.keys())}); '
                       'export it with export.py')
    self._bytes_fn = signatures[em.SERVING_DEFAULT]
    self._images_fn = signatures[em.DETECT_IMAGES]
    _, kwargs = self._images_fn.structured_input_signature
    if len(kwargs) != 1:
      raise RunError(f'{path}: {em.DETECT_IMAGES!r} takes inputs {sorted(kwargs)}, '
                     'expected one uint8 image batch')
    self._images_input, spec = next(iter(kwargs.items()))
    if spec.dtype != tf.uint8:
      raise RunError(f'{path}: {em.DETECT_IMAGES!r} input {self._images_input!r} is '
                     f'{spec.dtype.name}, expected uint8 images')

  def serve_image_bytes(self, image_bytes):
    from faster_rcnn_tf.serving import export_module as em
    return self._bytes_fn(**{em.IMAGE_BYTES: image_bytes})

  def serve_images(self, images):
    return self._images_fn(**{self._images_input: images})


# ---- the loader ----

@dataclasses.dataclass
class LoadedModel:
  """What `load_model` found.

  kind: 'run' (a training run folder and one of its checkpoints), 'keras' (a .keras
    file) or 'saved_model' (an export.py SavedModel).
  path: the folder or file loaded (for a SavedModel, its version folder).
  model: the `FasterRCNN` (kinds 'run' and 'keras'); None for a SavedModel, which runs
    through `detector()` only.
  config: the RunConfig (kind 'run'), else None.
  class_names: the K class names; class id i (1..K) is class_names[i - 1].
  min_size, max_size: the resizing for inference (min_size: the run's test size, one int
    even when it trained at several; `config.DataConfig.inference_min_size`).
  checkpoint, step: the restored checkpoint prefix and its training step (kind 'run').
  export_info: export.py's export_info.json (kind 'saved_model'), else None.
  """
  kind: str
  path: str
  model: Any
  config: Optional[config_lib.RunConfig]
  class_names: Sequence[str]
  min_size: int
  max_size: int
  checkpoint: Optional[str] = None
  step: Optional[int] = None
  export_info: Optional[dict] = None
  saved_model: Any = None
  _detector: Any = dataclasses.field(default=None, init=False, repr=False, compare=False)
  _image_detector: Any = dataclasses.field(default=None, init=False, repr=False,
                                           compare=False)

  @property
  def description(self):
    """One line naming what was loaded (for logs and result files)."""
    if self.kind == 'run':
      return f'checkpoint {self.checkpoint}'
    if self.kind == 'keras':
      return f'Keras model {self.path}'
    return f'SavedModel {self.path}'

  def detect(self, images, **kwargs):
    """Detections of image files, a folder, arrays or a list of them: a list of
    `detector.ImageDetections` (boxes in original-image pixels, class names, scores,
    `.draw()`), one per image. kwargs go to `detector.Detector` (e.g. batch_size).
    Kinds 'run' and 'keras'; a SavedModel answers through `detector()`."""
    return self.image_detector(**kwargs)(images)

  def image_detector(self, **kwargs):
    """A `detector.Detector` with this model's class names and resizing (kept while
    kwargs stay empty, so its traced function is reused)."""
    if self.model is None:
      raise RunError(f'{self.path}: a SavedModel detects through detector() (its '
                     'signatures); load a run folder or a .keras file for detect()')
    from faster_rcnn_tf.detector import Detector
    if kwargs:
      return Detector(self.model, self.class_names, self.min_size, self.max_size, **kwargs)
    if self._image_detector is None:
      self._image_detector = Detector(self.model, self.class_names, self.min_size,
                                      self.max_size)
    return self._image_detector

  def detector(self, **module_kwargs):
    """serve_image_bytes / serve_images over original images (boxes normalized to them):
    a `serving.export_module.DetectionModule` around the model, or the SavedModel's
    signatures. module_kwargs go to DetectionModule (e.g. max_image_pixels). Without
    them the same detector is returned each time (its traced functions are kept)."""
    if module_kwargs:
      return self._make_detector(**module_kwargs)
    if self._detector is None:
      self._detector = self._make_detector()
    return self._detector

  def _make_detector(self, **module_kwargs):
    if self.kind == 'saved_model':
      return SavedModelSignatures(self.saved_model, self.path)
    from faster_rcnn_tf.serving import export_module
    return export_module.DetectionModule(self.model, list(self.class_names), self.min_size,
                                         self.max_size, **module_kwargs)


def kind_of(path: str) -> str:
  """'keras', 'saved_model' or 'run' for a path `load_model` accepts; RunError else."""
  if not os.path.exists(path):
    if os.path.isfile(path + '.index'):
      return 'run'  # a checkpoint prefix
    raise RunError(f'{path}: no such file or folder')
  if os.path.isfile(path):
    if path.endswith(KERAS_SUFFIX):
      return 'keras'
    raise RunError(f'{path}: not a .keras file, a training run folder or a SavedModel')
  try:
    resolve_saved_model(path)
    return 'saved_model'
  except RunError:
    pass
  if find_run_folder(path):
    return 'run'
  if os.path.isfile(os.path.join(path, CLASSES_FILE)):
    return 'run'  # reported by read_run_config: no run_config.json
  raise RunError(f'{path}: not a training run folder ({RUN_CONFIG_FILE}), a SavedModel '
                 f'({SAVED_MODEL_FILE} in it or in a numeric version folder) or a '
                 f'{KERAS_SUFFIX} file')


def load_model(path: str, checkpoint: Optional[str] = None,
               config: Optional[config_lib.RunConfig] = None) -> LoadedModel:
  """Loads a trained model for inference.

  Args:
    path: a training run folder (train.py's --model_dir; also RUN/best or a checkpoint
      prefix RUN/ckpt-N), a `.keras` file (`model.save`) or an export.py SavedModel
      (BASE/N, or BASE for its highest version N).
    checkpoint: for a run folder: None (the latest), 'best', a folder or a prefix
      (see `resolve_checkpoint`).
    config: for a run folder: the configuration to build the model from instead of the
      run's own (e.g. `RunConfig.from_flags(FLAGS, base=read_run_config(path))`: the
      run's settings with a script's command-line overrides).
  Returns:
    `LoadedModel`. Raises RunError (one line) for anything unusable.
  """
  kind = kind_of(path)
  if kind == 'keras':
    if checkpoint:
      raise RunError(f'{path}: a .keras file holds its weights; checkpoint={checkpoint} '
                     'applies to run folders only')
    import keras
    try:
      model = keras.saving.load_model(path)
    except (OSError, ValueError, TypeError) as e:
      raise RunError(f'{path}: cannot load the Keras model ({type(e).__name__}: {e})'
                     ) from None
    if not hasattr(model, 'num_classes'):
      raise RunError(f'{path}: holds a {type(model).__name__}, not a FasterRCNN')
    # FasterRCNN keeps class names and resizing in its config (None: saved without).
    names = getattr(model, 'class_names', None) or [
        f'class_{i}' for i in range(1, model.num_classes + 1)]
    return LoadedModel('keras', path, model, None, list(names), model.min_size,
                       model.max_size)
  if kind == 'saved_model':
    if checkpoint:
      raise RunError(f'{path}: a SavedModel holds its weights; checkpoint={checkpoint} '
                     'applies to run folders only')
    import tensorflow as tf
    folder = resolve_saved_model(path)
    info = read_export_info(folder) or {}
    try:
      loaded = tf.saved_model.load(folder)
    except (OSError, ValueError, tf.errors.OpError) as e:
      raise RunError(f'{folder}: cannot load a SavedModel ({e})') from None
    result = LoadedModel('saved_model', folder, None, None, list(info.get('class_names', [])),
                         info.get('min_size', 0), info.get('max_size', 0),
                         export_info=info or None, saved_model=loaded)
    result.detector()  # checks the signatures
    return result
  run = find_run_folder(path) or path
  if checkpoint is None and os.path.abspath(run) != os.path.abspath(path):
    checkpoint = path  # RUN/best or RUN/ckpt-N given as the path
  run_config = read_run_config(run)
  config = config or run_config
  ckpt = resolve_checkpoint(run, checkpoint)
  model = build_model(config)
  restore_checkpoint(model, ckpt, run_config, config.class_names)
  return LoadedModel('run', run, model, config, list(config.class_names),
                     config.data.inference_min_size, config.data.max_size, checkpoint=ckpt,
                     step=checkpoint_step(ckpt))
