"""The training loop as a library function: `train_loop(model, optimizer, strategy, ...)`.

Everything comes in as plain arguments (no flags, no globals), so a test or a notebook
runs it in-process; train.py builds the arguments from a `config.RunConfig`
(`training.run.train`). The loop:
  * runs `Trainer` steps on a tf.data dataset of global batches until `num_steps`
    (counted by the optimizer's iterations, so a restored optimizer resumes);
  * prints a progress line every `log_every` steps and writes loss / learning-rate
    scalars to a summary writer every `summary_every` steps;
  * saves a checkpoint every `checkpoint_every` steps and at the end through a
    `checkpoints.CheckpointKeeper`; Ctrl-C or SIGTERM saves one before returning;
  * every `eval_every` steps calls `evaluate(step)`, which returns a metric (higher is
    better) or None; the best checkpoint so far goes to the keeper's best/;
  * stops at the first step with a NaN or Inf loss, keeping the last good checkpoint;
  * under a multi-worker strategy asks every worker at the head of each step whether any
    was told to stop (`stop_agreement`, training/preemption.py), so all of them stop at
    the same step and save one checkpoint there;
  * raises `NoBatchError` when the dataset ends before `num_steps` (a repeated split
    none of whose images could be loaded ends at once).
"""

import dataclasses
import math
import signal
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import tensorflow as tf

from faster_rcnn_tf import progress as progress_lib
from faster_rcnn_tf.training.trainer import Trainer

DONE = 'done'                # reached num_steps
INTERRUPTED = 'interrupted'  # Ctrl-C / SIGTERM; a checkpoint of the current step saved
STOPPED = 'stopped'          # stop_after_steps reached; no final checkpoint
NONFINITE = 'nonfinite'      # a NaN / Inf loss; the last good checkpoint kept

_SHORT = {'rpn_class_loss': 'rpn_cls', 'rpn_box_loss': 'rpn_box',
          'head_class_loss': 'cls', 'head_box_loss': 'box', 'total_loss': 'total'}


class NoBatchError(ValueError):
  """The training dataset produced no further batch before `num_steps`."""


def _print(text):
  print(text, flush=True)


def format_losses(losses: Dict[str, float]) -> str:
  """'rpn_cls 0.6931 rpn_box 0.0988 ...' for a dict of named float losses."""
  return ' '.join(f'{_SHORT.get(k, k)} {v:.4f}' for k, v in losses.items())


@dataclasses.dataclass
class LoopResult:
  """What `train_loop` did.

  status: DONE, INTERRUPTED, STOPPED or NONFINITE.
  step: the last completed step (the optimizer's iterations).
  last_saved: the step of the last checkpoint written or restored, or None.
  history: (step, {loss name: float}) for every step this call ran.
  evaluations: (step, metric) for every `evaluate` call that returned a value.
  message: a one-line explanation for INTERRUPTED / NONFINITE, else ''.
  """
  status: str
  step: int
  last_saved: Optional[int]
  history: List[Tuple[int, Dict[str, float]]]
  evaluations: List[Tuple[int, float]]
  message: str = ''


def _stop_asked(stop_agreement, interrupted):
  if stop_agreement is None:
    return bool(interrupted)
  return stop_agreement.agreed(bool(interrupted))


def train_loop(model, optimizer, strategy: tf.distribute.Strategy, dataset: tf.data.Dataset,
               num_steps: int, *, keeper=None, checkpoint_every: int = 1000,
               resumed_from: Optional[int] = None,
               evaluate: Optional[Callable[[int], Optional[float]]] = None,
               eval_every: int = 0, best_metric_name: str = 'voc07_map@0.5',
               seed: int = 0, weight_decay: float = 1e-4, bias_lr_multiplier: float = 1.0,
               jit_compile: bool = False, learning_rate_fn=None, log_every: int = 10,
               summary_writer=None, summary_every: int = 50, batch_size: int = 1,
               stop_after_steps: int = 0, print_fn: Callable[[str], None] = _print,
               handle_sigterm: bool = True, stop_agreement=None) -> LoopResult:
  """Trains `model` from the optimizer's current step to `num_steps`.

  Args:
    model: a FasterRCNN built under `strategy.scope()`.
    optimizer: a built keras optimizer (under the same scope); its `iterations` is the
      step counter. A keras.optimizers.LossScaleOptimizer enables loss scaling.
    strategy: the tf.distribute.Strategy.
    dataset: a tf.data.Dataset of global training batches (`inputs` format: images
      float32 [B, H, W, 3], image_sizes int32 [B, 2], gt_boxes float32 [B, G, 4],
      gt_classes int32 [B, G]), at least num_steps - start steps long; it is
      distributed here.
    num_steps: the step to train to.
    keeper: a `checkpoints.CheckpointKeeper`, or None to save nothing.
    checkpoint_every: save every N steps (0: only at the end and on interruption).
    resumed_from: the step of a checkpoint the caller restored, or None.
    evaluate: None or fn(step) -> metric (float, higher is better) or None.
    eval_every: call `evaluate` every N steps (0: never here).
    best_metric_name: the name stored with the best checkpoint.
    seed, weight_decay, bias_lr_multiplier, jit_compile: see `trainer.Trainer`.
    learning_rate_fn: fn(step) -> learning rate, for the progress line and summaries
      (default: the optimizer's current rate).
    log_every, summary_every: progress lines and summary scalars every N steps.
    summary_writer: a tf.summary writer, or None.
    batch_size: images per global batch (for the images-per-second figures).
    stop_after_steps: return STOPPED after this many steps of this call (0: off).
    print_fn: where progress and messages go.
    handle_sigterm: turn SIGTERM into an interruption (from the main thread only).
    stop_agreement: a `preemption.StopAgreement` (every worker of a multi-worker run
      must pass one), or None: only this process's own interruption counts.
  Returns:
    `LoopResult`.
  Raises:
    NoBatchError: the dataset ended (message: the step reached).
  """
  start = int(optimizer.iterations.numpy())
  trainer = Trainer(model, optimizer, strategy, seed=seed, weight_decay=weight_decay,
                    bias_lr_multiplier=bias_lr_multiplier, jit_compile=jit_compile)
  if learning_rate_fn is None:
    learning_rate_fn = lambda step: optimizer.learning_rate  # noqa: E731
  bar = progress_lib.Progress('step', num_steps, unit='img', every=0.0, start=start)
  interrupted = []
  previous_handler = None
  if handle_sigterm and threading.current_thread() is threading.main_thread():
    previous_handler = signal.signal(signal.SIGTERM,
                                     lambda signum, frame: interrupted.append(signum))
  step = start
  last_saved = resumed_from
  history, evaluations = [], []
  status, message = DONE, ''
  run_steps = 0
  try:
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    while step < num_steps and not _stop_asked(stop_agreement, interrupted):
      t0 = time.time()
      try:
        batch = next(iterator)
      except (StopIteration, tf.errors.OutOfRangeError):
        raise NoBatchError(f'the training dataset ended at step {step}') from None
      losses = {k: float(v) for k, v in trainer.step(batch).items()}
      step += 1
      run_steps += 1
      history.append((step, losses))
      bad = [k for k, v in losses.items() if not math.isfinite(v)]
      if bad:
        kept = last_saved if last_saved is not None else 'none'
        message = (f'step {step}: loss {bad[0]} is {losses[bad[0]]} (all losses: '
                   f'{format_losses(losses)}). The last good checkpoint (step {kept}) is '
                   'kept.')
        print_fn(f'\nStopping: {message}')
        return LoopResult(NONFINITE, step, last_saved, history, evaluations, message)
      lr = float(learning_rate_fn(step - 1))
      if step % max(log_every, 1) == 0 or step == num_steps or step == start + 1:
        bar.update(step, f'{format_losses(losses)} | lr {lr:.2e}', force=True,
                   units_per_item=batch_size)
      if summary_writer is not None and summary_every and step % summary_every == 0:
        with summary_writer.as_default():
          for k, v in losses.items():
            tf.summary.scalar(f'loss/{k}', v, step=step)
          tf.summary.scalar('learning_rate', lr, step=step)
          tf.summary.scalar('images_per_second', batch_size / (time.time() - t0), step=step)
      if keeper is not None and checkpoint_every and step % checkpoint_every == 0:
        keeper.save(step)
        last_saved = step
      if evaluate is not None and eval_every and step % eval_every == 0:
        value = evaluate(step)
        if value is not None:
          evaluations.append((step, float(value)))
          print_fn(f'step {step}: {best_metric_name} {value:.4f}')
          if summary_writer is not None:
            with summary_writer.as_default():
              tf.summary.scalar(f'eval/{best_metric_name}', value, step=step)
          if keeper is not None:
            keeper.maybe_save_best(step, best_metric_name, value)
      if stop_after_steps and run_steps >= stop_after_steps:
        print_fn(f'Stopping after {run_steps} steps (stop_after_steps).')
        return LoopResult(STOPPED, step, last_saved, history, evaluations)
  except KeyboardInterrupt:
    interrupted.append(signal.SIGINT)
  finally:
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)
  if interrupted or (stop_agreement is not None and stop_agreement.stopped):
    status = INTERRUPTED
    message = f'interrupted at step {step}'
    if keeper is not None and step != last_saved:
      path = keeper.save(step)
      last_saved = step
      message += f': saved {path}'
    print_fn(f'\n{message[0].upper()}{message[1:]}')
    return LoopResult(status, step, last_saved, history, evaluations, message)
  if keeper is not None and step != last_saved:
    keeper.save(step)
    last_saved = step
  return LoopResult(status, step, last_saved, history, evaluations, message)
