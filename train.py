"""Trains Faster R-CNN: `python train.py --flagfile=configs/NAME.cfg`.

Checkpoints go to --model_dir every --checkpoint_every steps and at the end, beside the
run's configuration (run_config.json; flags.cfg holds the same settings as flags, for
people to read); running the same command again resumes from the newest checkpoint
that reads back whole (a damaged one is moved to MODEL_DIR/damaged/ with a warning). One
train.py at a time per --model_dir (the lock file MODEL_DIR/train.lock). Ctrl-C (or
SIGTERM) saves a checkpoint before exiting; under --strategy=multi_worker a SIGTERM to
any worker stops every worker at the same step, after one checkpoint. A checkpoint that
cannot be written (a full disk, a read-only folder) stops the run with one line naming
the folder (exit status 1), keeping the earlier ones. A NaN or Inf loss stops the run,
naming the step and the loss, and keeps the last good checkpoint. After training the
model is evaluated on --eval_split and the VOC mAP@0.5 is printed. See docs/faults.md.

The console shows progress and results only; --verbosity=0 (absl's flag) brings back
TensorFlow's own log lines. The work is done by faster_rcnn_tf.training.run.train on
the `config.RunConfig` built from the flags.
"""

import sys

from faster_rcnn_tf import console

console.quiet_start()

from absl import flags  # noqa: E402

from faster_rcnn_tf import cli  # noqa: E402
from faster_rcnn_tf import config as config_lib  # noqa: E402
from faster_rcnn_tf import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.define_data_flags()
config_flags.define_model_flags()
config_flags.define_train_flags()


def main(argv):
  if len(argv) > 1:
    print(f'train.py: unexpected arguments {argv[1:]}', file=sys.stderr)
    return 2
  console.quiet_loggers()
  from faster_rcnn_tf.training import run
  try:
    config = config_lib.RunConfig.from_flags(FLAGS)
    return run.train(config, flags_text=FLAGS.flags_into_string())
  except config_lib.ConfigError as e:
    print(f'train.py: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  cli.run_main(main, 'train.py')
