"""The hardware reference and the model's FLOPs: matmul GFLOP/s, FLOP table, profiler check.

    python bench/bench_roofline.py [--backbones=vgg16,resnet50,mobilenet_v2,tiny]
        [--sizes=600x800,600x1000] [--check_backbones=tiny,mobilenet_v2,vgg16,resnet50]
        [--check_size=224x320] [--threads=2] [--matmul_size=4096]

Prints JSON lines:
  "mode": "matmul_roofline"  fp32 n x n matmul GFLOP/s of numpy's BLAS and of TensorFlow
                             with the same thread count, and the faster one (the roofline
                             every other bench divides by);
  "mode": "flops"            per backbone and size: GFLOP per image for inference
                             (test_post_nms_topk RoIs) and for a training step
                             (roi_num_samples RoIs; forward + backward), by part, and the
                             seconds per image the matmul roofline would allow;
  "mode": "profiler_check"   bench/flops.py's count against TensorFlow's profiler
                             (tf.compat.v1.profiler, float_ops, on the traced graph of
                             tf.function(detect) and of the gradient step) at --check_size.
No model is run (graphs are only traced), so this is quick even for VGG16.

Known, explained differences in the check: the profiler has no FLOP rule for depthwise
convolution gradients (MobileNetV2 training: left out of both sides), and its rule for
strided convolution gradients assumes the input size is a multiple of the stride
(ResNet's conv5 head on 7x7 crops, stride 2: the profiler reports ~2.5% less for the
training step).
"""

import argparse
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import common  # pylint: disable=wrong-import-position


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--backbones', default='vgg16,resnet50,mobilenet_v2,tiny')
  parser.add_argument('--sizes', default='600x800,600x1000')
  parser.add_argument('--check_backbones', default='tiny,mobilenet_v2,vgg16,resnet50',
                      help="Profiler cross-check configs ('' to skip).")
  parser.add_argument('--check_size', default='224x320')
  parser.add_argument('--check_training', type=int, default=1,
                      help='Also cross-check the training step graph.')
  common.add_common_args(parser, repeats=3, warmup=1)
  return parser


def _g(x):
  return common._round(x / 1e9, 5)  # pylint: disable=protected-access


def run(args):
  from bench import flops as flops_lib

  matmul = common.start('roofline', args)
  records = [common.matmul_record('roofline', args, matmul)]
  peak = matmul['matmul_gflops'] * 1e9
  for backbone in common.parse_list(args.backbones):
    model = common.build_model(backbone, args.num_classes, args.seed)
    for height, width in common.parse_sizes(args.sizes):
      inf = flops_lib.model_flops(model, height, width, training=False)
      train = flops_lib.model_flops(model, height, width, training=True)
      rec = {'bench': 'roofline', 'mode': 'flops', 'backbone': backbone,
             'height': height, 'width': width, 'feature_shape': inf['feature_shape'],
             'inference_rois': inf['num_rois'], 'train_rois': train['num_rois'],
             'inference_gflop_per_image': _g(inf['total']),
             'inference_gflop_parts': {k: _g(v['forward']) for k, v in inf['parts'].items()},
             'train_gflop_per_image': _g(train['total']),
             'train_forward_gflop': _g(train['forward']),
             'train_backward_gflop': _g(train['backward']),
             'train_gflop_parts': {k: {'forward': _g(v['forward']),
                                       'backward': _g(v['backward'])}
                                   for k, v in train['parts'].items()},
             'matmul_gflops': matmul['matmul_gflops'],
             'inference_sec_per_image_at_roofline': common._round(inf['total'] / peak),  # pylint: disable=protected-access
             'train_sec_per_image_at_roofline': common._round(train['total'] / peak)}  # pylint: disable=protected-access
      rec.update(common.thread_info(args.threads))
      records.append(common.emit(rec))
    del model

  check = common.parse_list(args.check_backbones)
  if check:
    height, width = common.parse_sizes(args.check_size)[0]
    for backbone in check:
      model = common.build_model(backbone, args.num_classes, args.seed)
      for training in ([False, True] if args.check_training else [False]):
        result = flops_lib.cross_check(model, height, width, training=training)
        rec = {'bench': 'roofline', 'mode': 'profiler_check', 'backbone': backbone}
        rec.update({k: (common._round(v, 6) if isinstance(v, float) else v)  # pylint: disable=protected-access
                    for k, v in result.items() if k != 'profiler_by_op_gflop'})
        rec['profiler_by_op_gflop'] = {k: common._round(v, 5)  # pylint: disable=protected-access
                                       for k, v in result['profiler_by_op_gflop'].items()}
        records.append(common.emit(rec))
      del model
  return records


if __name__ == '__main__':
  common.script_main(build_parser, run)
