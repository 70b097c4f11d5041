"""Trains Faster R-CNN: `python train.py --flagfile=configs/NAME.cfg`.

Checkpoints go to --model_dir every --checkpoint_every steps and at the end, beside the
run's configuration (run_config.json; flags.cfg holds the same settings as flags, for
people to read); running the same command again resumes from the latest checkpoint.
Ctrl-C (or SIGTERM) saves a checkpoint before exiting. A NaN or Inf loss stops the run,
naming the step and the loss, and keeps the last good checkpoint. After training the
model is evaluated on --eval_split and the VOC mAP@0.5 is printed.

The console shows progress and results only; --verbosity=0 (absl's flag) brings back
TensorFlow's own log lines. The work is done by faster_rcnn_tf.training.run.train on
the `config.RunConfig` built from the flags.
"""

import sys

from faster_rcnn_tf import console

console.quiet_start()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

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
  app.run(lambda argv: sys.exit(main(argv)))
