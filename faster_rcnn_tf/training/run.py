"""A whole training run from a `config.RunConfig`: what train.py does after its flags.

`train(config)` reads the data, fits 'auto' anchors to the training split
(`fit_anchors`), builds the strategy, model and optimizer, writes the run folder's
run_config.json (and a human-readable flags.cfg when given), resumes from the newest
checkpoint that reads back whole, runs `loop.train_loop`, and evaluates at the end.
Bad settings raise `config.ConfigError` (one line naming the setting) before anything
is written; so do a run folder another live train.py holds (its lock file
train.lock, training/run_lock.py) and a folder whose checkpoints are all damaged
(training/checkpoint_check.py). A checkpoint that cannot be written raises
fileio.FolderWriteError (an OSError: train.py reports it in one line, exit status 1).
"""

import dataclasses
import json
import os
import re
import sys
import time
from typing import Optional

from faster_rcnn_tf import config as config_lib
from faster_rcnn_tf.training import distribute

# train.py's exit codes for the loop's outcomes.
EXIT_OK, EXIT_NONFINITE, EXIT_INTERRUPTED = 0, 3, 130


def _print(text):
  print(text, flush=True)


def _warn(line):
  print(f'train.py: {line}', file=sys.stderr, flush=True)


def validate(config: config_lib.RunConfig):
  """Raises ConfigError naming the flag when a setting cannot work."""
  t, m = config.train, config.model
  if not t.model_dir:
    raise config_lib.ConfigError('--model_dir is required')
  for name in ('num_steps', 'batch_size', 'learning_rate'):
    if getattr(t, name) <= 0:
      raise config_lib.ConfigError(f'--{name} must be positive, got {getattr(t, name)}')
  from faster_rcnn_tf import config_flags
  try:
    config_flags.check_dataset_path(config.data.dataset)
    if config.data.data_service:
      from faster_rcnn_tf.data import service
      service.check_address(config.data.data_service)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  w = m.backbone_weights
  if w not in ('', 'none', 'imagenet') and not os.path.exists(w):
    raise config_lib.ConfigError(f'--backbone_weights: file {w!r} does not exist')


def load_sources(config: config_lib.RunConfig):
  """(train source, evaluation source or None) of the configuration's dataset."""
  from faster_rcnn_tf.data import registry
  d, t = config.data, config.train
  kwargs = config_lib.source_kwargs(d)
  try:
    train = registry.get_source(d.dataset, d.train_split, seed=t.seed,
                                classes=list(d.classes) if d.classes else None, **kwargs)
    evals = None
    if t.final_eval or t.eval_every:
      evals = registry.get_source(d.dataset, d.eval_split, seed=t.seed,
                                  classes=train.class_names, **kwargs)
  except (ValueError, FileNotFoundError, OSError) as e:
    raise config_lib.ConfigError(f'--dataset={d.dataset}: {e}') from None
  if train.num_images == 0:
    raise config_lib.ConfigError(f'--dataset={d.dataset}: split {d.train_split!r} has no '
                                 'images')
  return train, evals


def fit_anchors(config: config_lib.RunConfig, train_source, print_fn=_print):
  """The configuration with anchor_scales / anchor_ratios 'auto[:N]' replaced by values
  fitted to the training split's boxes at the training sizes (`data.anchor_fit`), so
  the run's run_config.json records what the model uses; unchanged without 'auto'."""
  m, d = config.model, config.data
  if not m.auto_anchors:
    return config
  from faster_rcnn_tf.data import anchor_fit
  t0 = time.time()
  resized = anchor_fit.resized_boxes(train_source, d.train_min_sizes, d.max_size,
                                     d.skip_difficult)
  try:
    scales, ratios, report = anchor_fit.resolve_auto(
        resized, m.anchor_base_size, anchor_fit.feature_stride(m.backbone),
        [str(v) for v in m.anchor_scales], [str(v) for v in m.anchor_ratios],
        seed=config.train.seed)
  except ValueError as e:
    raise config_lib.ConfigError(f'--anchor_scales / --anchor_ratios auto: {e}') from None
  # Six significant digits: run_config.json and flags.cfg hold the same numbers.
  model = dataclasses.replace(m, anchor_scales=tuple(float(f'{v:g}') for v in scales),
                              anchor_ratios=tuple(float(f'{v:g}') for v in ratios))
  print_fn(f'Anchors fitted to {d.train_split} ({time.time() - t0:.0f} s): scales '
           f'{_joined(model.anchor_scales)} ratios {_joined(model.anchor_ratios)}; recall '
           f'at IoU 0.5 / 0.7: {report["recall_grid"]["0.5"]:.3f} / '
           f'{report["recall_grid"]["0.7"]:.3f}')
  return config.replace(model=model)


def _joined(values):
  return ','.join(f'{v:g}' for v in values)


def _with_anchors(flags_text, model: config_lib.ModelConfig):
  """flags.cfg text with its --anchor_scales / --anchor_ratios lines set to the model's
  (fitted) values."""
  for name in ('anchor_scales', 'anchor_ratios'):
    flags_text = re.sub(rf'^--{name}=.*$', f'--{name}={_joined(getattr(model, name))}',
                        flags_text, flags=re.M)
  return flags_text


def evaluate_model(model, source, config: config_lib.RunConfig, step, writer=None,
                   print_fn=_print):
  """VOC07 mAP@0.5 of `model` on `source`; prints the per-class table.

  The shared evaluation path (`run_model.voc07_map`): ground truth from the source's
  records, so evaluate.py --metric=voc07 reports the same number for the checkpoint.
  """
  from faster_rcnn_tf.evaluation import run_model
  value, results, run = run_model.voc07_map(
      model, source, batch_size=config.train.eval_batch_size,
      min_size=config.data.inference_min_size, max_size=config.data.max_size,
      max_images=config.train.max_eval_images)
  for name, ap in zip(source.class_names, results['ap']):
    print_fn(f'  AP@0.5 {name:>20s}: {ap:.4f}')
  if writer is not None:
    _image_summaries(writer, run.samples, source.class_names, step)
  return value


def _image_summaries(writer, samples, class_names, step):
  import numpy as np
  import tensorflow as tf
  from faster_rcnn_tf import inputs
  from faster_rcnn_tf import visualize
  pictures = []
  for batch, outputs in samples[:1]:
    for b in range(min(3, batch[inputs.IMAGES].shape[0])):
      h, w = np.asarray(batch[inputs.IMAGE_SIZES][b])
      image = np.asarray(batch[inputs.IMAGES][b, :h, :w]).astype(np.uint8)
      n = int(outputs[inputs.NUM_DETECTIONS][b])
      keep = outputs[inputs.DETECTION_SCORES][b, :n] >= 0.5
      boxes = outputs[inputs.DETECTION_BOXES][b, :n][keep]
      labels = [f'{class_names[c - 1]} {s:.2f}' for c, s in
                zip(outputs[inputs.DETECTION_CLASSES][b, :n][keep],
                    outputs[inputs.DETECTION_SCORES][b, :n][keep])]
      pictures.append(visualize.draw_boxes(image, boxes, labels))
  if pictures:
    with writer.as_default():
      for i, pic in enumerate(pictures):
        tf.summary.image(f'detections/{i}', pic[np.newaxis], step=step)


def train(config: config_lib.RunConfig, flags_text: Optional[str] = None,
          print_fn=_print) -> int:
  """Runs the configured training; returns train.py's exit code.

  Args:
    config: the run configuration (class_names may be empty: they come from the data).
    flags_text: written to MODEL_DIR/flags.cfg for people to read (train.py passes its
      flags), or None.
  Returns:
    EXIT_OK, EXIT_NONFINITE (a NaN / Inf loss) or EXIT_INTERRUPTED. Raises ConfigError.
    The chief holds the run folder's lock (train.lock) until it returns.
  """
  validate(config)
  train_source, eval_source = load_sources(config)
  config = config.replace(class_names=tuple(train_source.class_names))
  if config.model.auto_anchors:
    config = fit_anchors(config, train_source, print_fn)
    if flags_text is not None:  # flags.cfg shows the fitted values, not 'auto'
      flags_text = _with_anchors(flags_text, config.model)
  t = config.train
  distribute.split_cpu(t.cpu_devices)
  import keras
  import tensorflow as tf
  from faster_rcnn_tf.training import run_lock

  keras.utils.set_random_seed(t.seed)
  if t.deterministic:
    tf.config.experimental.enable_op_determinism()
  try:
    strategy = distribute.make_strategy(t.strategy, t.tpu)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  replicas = strategy.num_replicas_in_sync
  if t.batch_size % replicas:
    raise config_lib.ConfigError(f'--batch_size={t.batch_size} is not divisible by the '
                                 f'{replicas} replicas of --strategy={t.strategy}')
  print_fn(f'Strategy {t.strategy}: {replicas} replicas, global batch {t.batch_size}')
  lock = None
  if distribute.is_chief():
    try:
      lock = run_lock.RunLock(t.model_dir, warn=_warn).acquire()
    except run_lock.RunLockedError as e:
      raise config_lib.ConfigError(str(e)) from None
  try:
    return _train_in_folder(config, strategy, train_source, eval_source, flags_text,
                            print_fn)
  finally:
    if lock is not None:
      lock.release()


def _train_in_folder(config, strategy, train_source, eval_source, flags_text, print_fn):
  """`train` after the strategy is made and the run folder locked."""
  t = config.train
  import keras
  import tensorflow as tf
  from faster_rcnn_tf import runs
  from faster_rcnn_tf.data import pipeline
  from faster_rcnn_tf.fileio import atomic_write_text
  from faster_rcnn_tf.training import checkpoint_check
  from faster_rcnn_tf.training import checkpoints
  from faster_rcnn_tf.training import loop
  from faster_rcnn_tf.training import optimizer as optimizer_lib
  from faster_rcnn_tf.training import preemption

  model_dir = t.model_dir
  chief = distribute.is_chief()
  if chief:
    runs.write_run_config(model_dir, config)
    if flags_text is not None:
      atomic_write_text(os.path.join(model_dir, runs.FLAGS_FILE), flags_text)
  else:  # Other workers restore the chief's checkpoints, save into a private folder.
    model_dir = preemption.worker_folder(t.model_dir)
    os.makedirs(model_dir, exist_ok=True)

  precision = config.execution.precision
  with strategy.scope():
    model = runs.build_model(config, pretrained=True)
    opt = optimizer_lib.build_optimizer(t.learning_rate, t.momentum, t.lr_decay_steps,
                                        t.lr_decay_factor, t.warmup_steps, t.clip_grad_norm,
                                        t.optimizer)
    if precision == 'mixed_float16':  # bfloat16 has float32's range: no loss scaling
      opt = keras.optimizers.LossScaleOptimizer(opt)
    opt.build(model.trainable_variables)
    ckpt = tf.train.Checkpoint(model=model, optimizer=opt)
  try:
    keeper = checkpoints.CheckpointKeeper(model_dir, ckpt, t.keep_checkpoints, warn=_warn,
                                          restore_from=None if chief else t.model_dir)
  except checkpoint_check.DamagedCheckpointError as e:
    raise config_lib.ConfigError(str(e)) from None
  restored = keeper.restore_latest()
  start = int(opt.iterations.numpy())
  if restored:
    print_fn(f'Resuming from {restored} (step {start})')
  if start >= t.num_steps:
    print_fn(f'Already trained to step {start} (--num_steps={t.num_steps}).')

  # Data: with --deterministic the order is one fixed stream skipped to the resume step;
  # otherwise a resumed run reshuffles with a seed derived from the step.
  shuffle_seed = t.seed if t.deterministic else t.seed + start
  dataset = pipeline.make_dataset(train_source, training=True, batch_size=t.batch_size,
                                  flip=config.data.flip, shuffle_seed=shuffle_seed,
                                  skip_difficult=config.data.skip_difficult,
                                  **config_lib.pipeline_kwargs(config.data))
  if t.deterministic and start:
    dataset = dataset.skip(start)
  if config.data.data_service:  # after the skip: the service serves the resumed stream
    from faster_rcnn_tf.data import service
    try:
      dataset = service.distribute(dataset, config.data.data_service,
                                   processing_mode=config.data.data_service_mode)
    except service.DataServiceError as e:
      raise config_lib.ConfigError(str(e)) from None
  writer = tf.summary.create_file_writer(os.path.join(model_dir, 'train')) \
      if chief else tf.summary.create_noop_writer()
  schedule = optimizer_lib.StepDecayWithWarmup(t.learning_rate, t.lr_decay_steps,
                                               t.lr_decay_factor, t.warmup_steps)

  def evaluate(step):
    if eval_source is None:
      return None
    return evaluate_model(model, eval_source, config, step, writer, print_fn)

  try:
    result = loop.train_loop(
        model, opt, strategy, dataset, t.num_steps, keeper=keeper,
        checkpoint_every=t.checkpoint_every, resumed_from=start if restored else None,
        evaluate=evaluate, eval_every=t.eval_every, seed=t.seed,
        weight_decay=t.weight_decay, bias_lr_multiplier=2.0 if t.double_bias_lr else 1.0,
        jit_compile=t.jit_compile, learning_rate_fn=schedule, log_every=t.log_every,
        summary_writer=writer, summary_every=t.summary_every, batch_size=t.batch_size,
        stop_after_steps=t.stop_after_steps, print_fn=print_fn,
        stop_agreement=preemption.StopAgreement(strategy))
  except loop.NoBatchError:  # the repeated split is empty: no image could be loaded
    from faster_rcnn_tf.data import problems as problems_lib
    raise config_lib.ConfigError(problems_lib.nothing_loaded_message(train_source)) from None
  if result.status == loop.NONFINITE:
    return EXIT_NONFINITE
  if result.status == loop.INTERRUPTED:
    return EXIT_INTERRUPTED
  if result.status == loop.STOPPED:
    return EXIT_OK
  step = result.step
  print_fn(f'Training done: step {step}, checkpoints in {model_dir}')
  if t.final_eval and eval_source is not None and chief:
    value = evaluate_model(model, eval_source, config, step, writer, print_fn)
    print_fn(f'VOC07 mAP@0.5 on {config.data.dataset} {config.data.eval_split}: '
             f'{value:.4f}')
    atomic_write_text(os.path.join(model_dir, 'final_eval.json'),
                      json.dumps({'step': step, 'split': config.data.eval_split,
                                  'voc07_map@0.5': value}))
  return EXIT_OK
