"""Training step speed: seconds per step of training.trainer.Trainer (forward, losses,
gradients, weight decay, SGD momentum update), per backbone, image size and batch.

    python bench/bench_train_step.py [--backbones=vgg16,resnet50,mobilenet_v2,tiny]
        [--sizes=600x800] [--batches=1,4] [--xla=off|on|both]
        [--fold_batch_norm=on|off|both] [--precision=float32|mixed_float16|mixed_bfloat16]
        [--repeats=5] [--warmup=1] [--threads=2]

The model has random weights, 20 classes and the model defaults (VGG16 / ResNet with
their first blocks frozen: freeze_early_layers=True), under tf.distribute.get_strategy()
(the default strategy: one device), with the optimizer of train.py (SGD, momentum 0.9,
weight decay 1e-4, doubled bias learning rate). Inputs: random pixels and 5 random
ground-truth boxes per image (padded to 20), fed as tensors (no input pipeline: see
bench/bench_input_pipeline.py for that).

Prints one JSON line per measurement (after a first line with the matmul roofline):
  {"bench": "train_step", "config", "backbone", "mode" (train_step / train_step_xla),
   "height", "width", "batch", "sec_per_image_*", "sec_per_step_median", "images_per_s",
   "gflop_per_image", "achieved_gflops", "matmul_gflops", "roofline_fraction", ...}
FLOPs: bench/flops.py's training rule (RoI head on roi_num_samples RoIs per image;
backward 2x forward for trainable layers with trainable layers below them, 1x for the
first trainable layer and for frozen layers above trainable ones, 0 below).
"""

import argparse
import math
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import common  # pylint: disable=wrong-import-position


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--backbones', default='vgg16,resnet50,mobilenet_v2,tiny')
  parser.add_argument('--sizes', default='600x800', help='HxW list.')
  parser.add_argument('--batches', default='1,4')
  parser.add_argument('--xla', default='off', choices=('off', 'backbone', 'on', 'both', 'all'),
                      help="off: no XLA; backbone: only the backbone XLA-compiled (the "
                      "model's compile_backbone); on: Trainer(jit_compile=True); both: off "
                      "and on; all: the three.")
  common.add_fold_batch_norm_arg(parser, 'one after the other')
  parser.add_argument('--learning_rate', type=float, default=0.001)
  parser.add_argument('--num_boxes', type=int, default=5, help='Ground-truth boxes per image.')
  parser.add_argument('--freeze_early_layers', type=int, default=1,
                      help='1: the model default (VGG16 conv1-2 frozen); 0: train all.')
  common.add_common_args(parser, repeats=5, warmup=1)
  return parser


def xla_settings(value):
  return {'off': [False], 'backbone': ['backbone'], 'on': [True], 'both': [False, True],
          'all': [False, 'backbone', True]}[value]


def make_trainer(backbone, args, jit_compile, fold_batch_norm=True, **overrides):
  """(model, Trainer) under the default strategy, as train.py builds them (overrides:
  further FasterRCNN keywords)."""
  import tensorflow as tf
  from faster_rcnn_tf.training import optimizer as optimizer_lib
  from faster_rcnn_tf.training.trainer import Trainer
  strategy = tf.distribute.get_strategy()
  with strategy.scope():
    model = common.build_model(backbone, args.num_classes, args.seed,
                               freeze_early_layers=bool(args.freeze_early_layers),
                               compile_backbone=jit_compile == 'backbone',
                               fold_batch_norm=fold_batch_norm, **overrides)
    opt = optimizer_lib.build_optimizer(args.learning_rate, momentum=0.9)
    if common.precision() == 'mixed_float16':  # loss scaling, as train.py
      import keras
      opt = keras.optimizers.LossScaleOptimizer(opt)
  trainer = Trainer(model, opt, strategy, seed=args.seed, weight_decay=1e-4,
                    bias_lr_multiplier=2.0, jit_compile=jit_compile is True)
  return model, trainer


def run(args):
  """Runs every measurement; returns the records (each also printed)."""
  import tensorflow as tf
  from bench import flops as flops_lib

  sizes = common.parse_sizes(args.sizes)
  batches = common.parse_ints(args.batches)
  matmul = common.start('train_step', args)
  records = [common.matmul_record('train_step', args, matmul)]
  for backbone in common.parse_list(args.backbones):
    settings = [(jit, fold) for jit in xla_settings(args.xla)
                for fold in common.fold_variants(args.fold_batch_norm)]
    for jit, fold in settings:
      mode = {False: 'train_step', True: 'train_step_xla',
              'backbone': 'train_step_xla_backbone'}[jit]
      model, trainer = make_trainer(backbone, args, jit, fold)
      for height, width in sizes:
        flop = flops_lib.model_flops(model, height, width, training=True)
        for batch in batches:
          data = common.random_train_batch(batch, height, width, args.num_boxes,
                                           seed=args.seed, num_classes=args.num_classes)
          data = {k: tf.constant(v) for k, v in data.items()}
          last = {}

          def step():
            last['losses'] = common.to_host(trainer.step(data))  # pylint: disable=cell-var-from-loop

          try:
            warm, times = common.time_fn(step, args.warmup, args.repeats)
          except Exception as e:  # pylint: disable=broad-except
            records.append(common.emit({
                'bench': 'train_step', 'backbone': backbone, 'mode': mode, 'height': height,
                'width': width, 'batch': batch, 'threads': args.threads,
                'error': f'{type(e).__name__}: {str(e)[:500]}'}))
            continue
          fields = common.timing_fields(times, batch, warm)
          total = float(last['losses']['total_loss']) if last else float('nan')
          rec = {'bench': 'train_step',
                 'config': (f'{backbone}/voc{args.num_classes}/'
                            f'roi{model.proposal_targets.num_samples}/'
                            f'{"frozen_early" if args.freeze_early_layers else "all_trainable"}'),
                 'backbone': backbone, 'mode': mode, 'height': height, 'width': width,
                 'batch': batch, 'num_rois': flop['num_rois'], 'fold_batch_norm': fold,
                 'precision': common.precision()}
          rec.update(common.thread_info(args.threads))
          rec.update(fields)
          rec['sec_per_step_median'] = fields['sec_per_batch_median']
          rec.update(common.roofline_fields(flop['total'], fields['sec_per_image_median'],
                                            matmul))
          rec['gflop_forward_per_image'] = common._round(flop['forward'] / 1e9)  # pylint: disable=protected-access
          rec['gflop_parts'] = {
              k: {'forward': common._round(v['forward'] / 1e9),  # pylint: disable=protected-access
                  'backward': common._round(v['backward'] / 1e9)}  # pylint: disable=protected-access
              for k, v in flop['parts'].items()}
          rec['total_loss_last'] = total if math.isfinite(total) else str(total)
          if batch == 1:
            rec.update(common.reference_fields(mode, backbone, height, width,
                                               fields['sec_per_batch_median']))
          rec['load_avg'] = common.host_fields()['load_avg']
          records.append(common.emit(rec))
      del model, trainer
  return records


if __name__ == '__main__':
  common.script_main(build_parser, run)
