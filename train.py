"""Trains Faster R-CNN: `python train.py --flagfile=configs/NAME.cfg`.

Checkpoints go to --model_dir every --checkpoint_every steps and at the end; running the
same command again resumes from the latest one. Ctrl-C (or SIGTERM) saves a checkpoint
before exiting. A NaN or Inf loss stops the run, naming the step and the loss, and keeps
the last good checkpoint. After training the model is evaluated on --eval_split and the
VOC mAP@0.5 is printed.
"""

import json
import math
import os
import signal
import sys
import time

from absl import app
from absl import flags
from absl import logging

from faster_rcnn_tf import config_flags
from faster_rcnn_tf.training import distribute

FLAGS = flags.FLAGS
config_flags.define_data_flags()
config_flags.define_model_flags()
config_flags.define_input_service_flags()
flags.DEFINE_string('model_dir', None, 'Folder for checkpoints, flags and summaries.')
flags.DEFINE_integer('num_steps', 70000, 'Training steps (global batches).')
flags.DEFINE_integer('batch_size', 1, 'Global batch size (split across replicas).')
flags.DEFINE_float('learning_rate', 0.001, 'Base learning rate.')
flags.DEFINE_enum('optimizer', 'sgd', ['sgd', 'adam'], "'sgd' (the reference) or 'adam'.")
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
flags.DEFINE_bool('jit_compile', False, 'Compile the training step with XLA (on GPUs it '
                  'is about 25x slower with TF 2.21: XLA lowers the NMS kernel to a slow '
                  'loop; see README, Performance).')
flags.DEFINE_integer('seed', 0, 'Random seed (sampling, shuffling, flips, initialization).')
flags.DEFINE_bool('deterministic', False, 'Deterministic ops and a data order that a '
                  'resumed run reproduces exactly.')
flags.DEFINE_integer('eval_every', 0, 'Evaluate every N steps and keep the best checkpoint '
                     '(0: only at the end).')
flags.DEFINE_integer('checkpoint_every', 1000, 'Checkpoint every N steps.')
flags.DEFINE_integer('keep_checkpoints', 5, 'Recent checkpoints kept.')
flags.DEFINE_integer('log_every', 10, 'Progress line every N steps.')
flags.DEFINE_integer('summary_every', 50, 'TensorBoard scalars every N steps.')
flags.DEFINE_bool('final_eval', True, 'Evaluate on --eval_split after training.')
flags.DEFINE_integer('eval_batch_size', 4, 'Images per evaluation batch.')
flags.DEFINE_integer('max_eval_images', 0, 'Evaluate on at most this many images (0: all).')
flags.DEFINE_integer('stop_after_steps', 0, 'Testing aid: exit after this '
                     'many steps of this invocation without a final checkpoint (0: off).')


class UsageError(Exception):
  """A bad flag value: reported in one line, exit code 2, nothing written."""


def _validate():
  if not FLAGS.model_dir:
    raise UsageError('--model_dir is required')
  if FLAGS.num_steps <= 0:
    raise UsageError(f'--num_steps must be positive, got {FLAGS.num_steps}')
  if FLAGS.batch_size <= 0:
    raise UsageError(f'--batch_size must be positive, got {FLAGS.batch_size}')
  if FLAGS.learning_rate <= 0:
    raise UsageError(f'--learning_rate must be positive, got {FLAGS.learning_rate}')
  try:
    boundaries = [int(s) for s in FLAGS.lr_decay_steps if s != '']
  except ValueError:
    raise UsageError(f'--lr_decay_steps must be integers, got {FLAGS.lr_decay_steps}')
  try:
    config_flags.check_dataset_path(FLAGS.dataset)
    [float(v) for v in FLAGS.anchor_scales + FLAGS.anchor_ratios]
    config_flags.resolve_precision(FLAGS)
    if FLAGS.data_service:
      from faster_rcnn_tf.data import service
      service.check_address(FLAGS.data_service)
  except ValueError as e:
    raise UsageError(str(e))
  w = FLAGS.backbone_weights
  if w not in ('', 'none', 'imagenet') and not os.path.exists(w):
    raise UsageError(f'--backbone_weights: file {w!r} does not exist')
  return boundaries


def _load_sources():
  from faster_rcnn_tf.data import registry
  kwargs = config_flags.source_kwargs(FLAGS)
  try:
    train = registry.get_source(FLAGS.dataset, FLAGS.train_split, seed=FLAGS.seed, **kwargs)
    evals = None
    if FLAGS.final_eval or FLAGS.eval_every:
      evals = registry.get_source(FLAGS.dataset, FLAGS.eval_split, seed=FLAGS.seed,
                                  classes=train.class_names,
                                  **{k: v for k, v in kwargs.items() if k != 'classes'})
  except (ValueError, FileNotFoundError, OSError) as e:
    raise UsageError(f'--dataset={FLAGS.dataset}: {e}')
  if train.num_images == 0:
    raise UsageError(f'--dataset={FLAGS.dataset}: split {FLAGS.train_split!r} has no images')
  return train, evals


def _write_run_files(class_names):
  from faster_rcnn_tf.fileio import atomic_write_text
  os.makedirs(FLAGS.model_dir, exist_ok=True)
  atomic_write_text(os.path.join(FLAGS.model_dir, 'flags.cfg'), FLAGS.flags_into_string())
  atomic_write_text(os.path.join(FLAGS.model_dir, 'classes.json'),
                    json.dumps({'class_names': list(class_names)}, indent=1))


def _format_losses(losses):
  short = {'rpn_class_loss': 'rpn_cls', 'rpn_box_loss': 'rpn_box',
           'head_class_loss': 'cls', 'head_box_loss': 'box', 'total_loss': 'total'}
  return ' '.join(f'{short[k]} {v:.4f}' for k, v in losses.items())


def evaluate_model(model, source, step, writer=None):
  """VOC07 mAP@0.5 of `model` on `source`; prints the per-class table.

  The shared evaluation path (`run_model.voc07_map`): ground truth from the source's
  records, so evaluate.py --metric=voc07 reports the same number for the checkpoint.
  """
  from faster_rcnn_tf.evaluation import run_model
  value, results, run = run_model.voc07_map(
      model, source, batch_size=FLAGS.eval_batch_size, min_size=FLAGS.min_size,
      max_size=FLAGS.max_size, max_images=FLAGS.max_eval_images)
  for name, ap in zip(source.class_names, results['ap']):
    print(f'  AP@0.5 {name:>20s}: {ap:.4f}')
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


def train(boundaries):
  train_source, eval_source = _load_sources()
  class_names = train_source.class_names
  distribute.split_cpu(FLAGS.cpu_devices)
  import keras
  import numpy as np
  import tensorflow as tf
  from faster_rcnn_tf.data import pipeline
  from faster_rcnn_tf.model import FasterRCNN
  from faster_rcnn_tf.training import checkpoints
  from faster_rcnn_tf.training import optimizer as optimizer_lib
  from faster_rcnn_tf.training.trainer import Trainer

  keras.utils.set_random_seed(FLAGS.seed)
  if FLAGS.deterministic:
    tf.config.experimental.enable_op_determinism()
  precision = config_flags.apply_precision(FLAGS)  # checked in _validate
  strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.tpu)
  replicas = strategy.num_replicas_in_sync
  if FLAGS.batch_size % replicas:
    raise UsageError(f'--batch_size={FLAGS.batch_size} is not divisible by the '
                     f'{replicas} replicas of --strategy={FLAGS.strategy}')
  print(f'Strategy {FLAGS.strategy}: {replicas} replicas, global batch {FLAGS.batch_size}',
        flush=True)
  chief = distribute.is_chief()
  if chief:
    _write_run_files(class_names)
  else:  # Other workers write their (unused) checkpoints to a private folder.
    FLAGS.model_dir = os.path.join(FLAGS.model_dir, f'.worker_{os.getpid()}')
    os.makedirs(FLAGS.model_dir, exist_ok=True)

  with strategy.scope():
    model = FasterRCNN(**config_flags.model_kwargs(FLAGS, len(class_names)))
    opt = optimizer_lib.build_optimizer(FLAGS.learning_rate, FLAGS.momentum, boundaries,
                                        FLAGS.lr_decay_factor, FLAGS.warmup_steps,
                                        FLAGS.clip_grad_norm, FLAGS.optimizer)
    if precision == 'mixed_float16':  # bfloat16 has float32's range: no loss scaling
      opt = keras.optimizers.LossScaleOptimizer(opt)
    opt.build(model.trainable_variables)
    ckpt = tf.train.Checkpoint(model=model, optimizer=opt)
  keeper = checkpoints.CheckpointKeeper(FLAGS.model_dir, ckpt, FLAGS.keep_checkpoints)
  restored = keeper.restore_latest()
  start = int(opt.iterations.numpy())
  if restored:
    print(f'Resuming from {restored} (step {start})', flush=True)
  if start >= FLAGS.num_steps:
    print(f'Already trained to step {start} (--num_steps={FLAGS.num_steps}).')

  # Data: with --deterministic the order is one fixed stream skipped to the resume step;
  # otherwise a resumed run reshuffles with a seed derived from the step.
  shuffle_seed = FLAGS.seed if FLAGS.deterministic else FLAGS.seed + start
  dataset = pipeline.make_dataset(train_source, training=True, batch_size=FLAGS.batch_size,
                                  flip=FLAGS.flip, shuffle_seed=shuffle_seed,
                                  skip_difficult=FLAGS.skip_difficult,
                                  **config_flags.pipeline_kwargs(FLAGS))
  if FLAGS.deterministic and start:
    dataset = dataset.skip(start)
  if FLAGS.data_service:
    from faster_rcnn_tf.data import service
    try:
      dataset = service.distribute(dataset, FLAGS.data_service,
                                   processing_mode=FLAGS.data_service_mode)
    except service.DataServiceError as e:
      raise UsageError(str(e)) from None
  dist_dataset = strategy.experimental_distribute_dataset(dataset)
  trainer = Trainer(model, opt, strategy, seed=FLAGS.seed, weight_decay=FLAGS.weight_decay,
                    bias_lr_multiplier=2.0 if FLAGS.double_bias_lr else 1.0,
                    jit_compile=FLAGS.jit_compile)
  writer = tf.summary.create_file_writer(os.path.join(FLAGS.model_dir, 'train')) \
      if chief else tf.summary.create_noop_writer()
  schedule = optimizer_lib.StepDecayWithWarmup(FLAGS.learning_rate, boundaries,
                                               FLAGS.lr_decay_factor, FLAGS.warmup_steps)

  from faster_rcnn_tf import progress as progress_lib
  bar = progress_lib.Progress('step', FLAGS.num_steps, unit='img', every=0.0, start=start)
  interrupted = []

  def on_signal(signum, frame):
    interrupted.append(signum)
  signal.signal(signal.SIGTERM, on_signal)

  step = start
  iterator = iter(dist_dataset)
  run_steps = 0
  last_saved = start if restored else -1
  try:
    while step < FLAGS.num_steps and not interrupted:
      t0 = time.time()
      try:
        batch = next(iterator)
      except (StopIteration, tf.errors.OutOfRangeError):  # the repeated split is empty
        from faster_rcnn_tf.data import problems as problems_lib
        raise UsageError(problems_lib.nothing_loaded_message(train_source)) from None
      losses = trainer.step(batch)
      losses = {k: float(v) for k, v in losses.items()}
      step += 1
      run_steps += 1
      bad = [k for k, v in losses.items() if not math.isfinite(v)]
      if bad:
        print(f'\nStopping: step {step}: loss {bad[0]} is {losses[bad[0]]} '
              f'(all losses: {_format_losses(losses)}). The last good checkpoint '
              f'(step {last_saved if last_saved >= 0 else "none"}) is kept.', flush=True)
        return 3
      lr = float(schedule(step - 1))
      if step % FLAGS.log_every == 0 or step == FLAGS.num_steps or step == start + 1:
        bar.update(step, f'{_format_losses(losses)} | lr {lr:.2e}', force=True,
                   units_per_item=FLAGS.batch_size)
      if step % FLAGS.summary_every == 0:
        with writer.as_default():
          for k, v in losses.items():
            tf.summary.scalar(f'loss/{k}', v, step=step)
          tf.summary.scalar('learning_rate', lr, step=step)
          tf.summary.scalar('images_per_second', FLAGS.batch_size / (time.time() - t0),
                            step=step)
      if step % FLAGS.checkpoint_every == 0:
        keeper.save(step)
        last_saved = step
      if FLAGS.eval_every and step % FLAGS.eval_every == 0 and eval_source is not None:
        value = evaluate_model(model, eval_source, step, writer)
        print(f'step {step}: VOC07 mAP@0.5 {value:.4f}', flush=True)
        with writer.as_default():
          tf.summary.scalar('eval/mAP@0.5', value, step=step)
        if chief:
          keeper.maybe_save_best(step, 'voc07_map@0.5', value)
      if FLAGS.stop_after_steps and run_steps >= FLAGS.stop_after_steps:
        print(f'Stopping after {run_steps} steps (--stop_after_steps).', flush=True)
        return 0
  except KeyboardInterrupt:
    interrupted.append(signal.SIGINT)
  if interrupted:
    if step != last_saved:
      path = keeper.save(step)
      print(f'\nInterrupted at step {step}: saved {path}', flush=True)
    return 130
  if step != last_saved:
    keeper.save(step)
  print(f'Training done: step {step}, checkpoints in {FLAGS.model_dir}', flush=True)
  if FLAGS.final_eval and eval_source is not None and chief:
    value = evaluate_model(model, eval_source, step, writer)
    print(f'VOC07 mAP@0.5 on {FLAGS.dataset} {FLAGS.eval_split}: {value:.4f}', flush=True)
    from faster_rcnn_tf.fileio import atomic_write_text
    atomic_write_text(os.path.join(FLAGS.model_dir, 'final_eval.json'),
                      json.dumps({'step': step, 'split': FLAGS.eval_split,
                                  'voc07_map@0.5': value}))
  return 0


def main(argv):
  if len(argv) > 1:
    print(f'train.py: unexpected arguments {argv[1:]}', file=sys.stderr)
    return 2
  try:
    boundaries = _validate()
    return train(boundaries)
  except UsageError as e:
    print(f'train.py: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)))
