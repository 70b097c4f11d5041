"""Which library runs each piece of a training convolution faster: the measurements
behind `faster_rcnn_tf/ops/hybrid_conv.py`.

    python bench/bench_conv_kernels.py [--layers=150x200x256,75x100x512,38x50x512,300x400x128]
        [--backbone=vgg16] [--backbone_size=608x800] [--parts=kernels,backbone]
        [--repeats=3] [--threads=2]

kernels: for each 3x3 'same' convolution HxWxC (C in = C out, batch 1: VGG16's conv2-5
shapes at 600x800), the forward pass, the input gradient (Conv2DBackpropInput) and the
filter gradient (Conv2DBackpropFilter), each as a plain tf.function (TensorFlow's oneDNN
kernels) and XLA-compiled. One JSON line per (layer, part, library) with GFLOP/s and the
fraction of the matmul roofline of this run.

backbone: VGG16's backbone (conv1-2 frozen, as in training; or another plain conv
backbone: tiny, tiny_s8), forward and gradients of all trainable kernels, four ways,
timed interleaved: plain TensorFlow, the whole backbone XLA-compiled (what
compile_backbone did for training before ops.hybrid_conv), hybrid_conv (what it does
now: input gradients from hybrid_conv.DEFAULT_INPUT_GRAD_LIBRARY) and hybrid_conv with
its input gradients from the other library. FLOPs: forward 2*H*W*Cin*Cout*9 per conv, plus input and filter gradients
of the trainable layers (no input gradient below the first trainable one).
"""

import argparse
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import common  # pylint: disable=wrong-import-position

PARTS = ('forward', 'input_grad', 'filter_grad')


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--layers', default='150x200x256,75x100x512,38x50x512,300x400x128',
                      help='HxWxC list: 3x3 convolutions with C input and output channels.')
  parser.add_argument('--backbone', default='vgg16', help='A plain conv backbone.')
  parser.add_argument('--backbone_size', default='608x800')
  parser.add_argument('--parts', default='kernels,backbone')
  common.add_common_args(parser, repeats=3, warmup=1)
  return parser


def _kernel_fns(h, w, c, jit):
  import tensorflow as tf
  strides = [1, 1, 1, 1]
  return {
      'forward': tf.function(lambda x, k, dy: tf.nn.conv2d(x, k, 1, 'SAME'),
                             jit_compile=jit),
      'input_grad': tf.function(lambda x, k, dy: tf.raw_ops.Conv2DBackpropInput(
          input_sizes=[1, h, w, c], filter=k, out_backprop=dy, strides=strides,
          padding='SAME'), jit_compile=jit),
      'filter_grad': tf.function(lambda x, k, dy: tf.raw_ops.Conv2DBackpropFilter(
          input=x, filter_sizes=[3, 3, c, c], out_backprop=dy, strides=strides,
          padding='SAME'), jit_compile=jit),
  }


def run_kernels(args, matmul, records):
  import tensorflow as tf
  for text in common.parse_list(args.layers):
    h, w, c = (int(v) for v in text.lower().split('x'))
    x = tf.random.stateless_normal([1, h, w, c], seed=[args.seed, 1])
    k = tf.random.stateless_normal([3, 3, c, c], seed=[args.seed, 2])
    dy = tf.random.stateless_normal([1, h, w, c], seed=[args.seed, 3])
    flop = 2.0 * h * w * c * c * 9
    for jit in (False, True):
      for part, fn in _kernel_fns(h, w, c, jit).items():
        warm, times = common.time_fn(lambda fn=fn: fn(x, k, dy).numpy(), args.warmup,
                                     args.repeats)
        rec = {'bench': 'conv_kernels', 'layer': f'{h}x{w}x{c}', 'part': part,
               'library': 'xla' if jit else 'tensorflow_onednn'}
        rec.update(common.thread_info(args.threads))
        rec.update(common.timing_fields(times, 1, warm))
        rec.update(common.roofline_fields(flop, rec['sec_per_image_median'], matmul))
        records.append(common.emit(rec))


def plain_convnet_training_flop(features, height, width):
  """Forward + gradient FLOPs of a plain conv backbone trained with frozen early layers."""
  import keras
  flop, trainable_below = 0.0, False
  h, w = height, width
  for layer in features.layers:
    if isinstance(layer, keras.layers.MaxPooling2D):
      h, w = h // layer.strides[0], w // layer.strides[1]
    elif isinstance(layer, keras.layers.Conv2D):
      h, w = -(-h // layer.strides[0]), -(-w // layer.strides[1])  # 'same' padding
      kh, kw, cin, cout = layer.kernel.shape
      conv = 2.0 * h * w * kh * kw * cin * cout
      flop += conv * (1 + int(layer.trainable) + int(trainable_below))
      trainable_below = trainable_below or layer.trainable
  return flop


def run_backbone(args, matmul, records):
  import tensorflow as tf
  from faster_rcnn_tf import backbones
  from faster_rcnn_tf.ops import hybrid_conv
  (height, width), = common.parse_sizes(args.backbone_size)
  net = backbones.build_backbone(args.backbone)
  backbones.freeze_layers(net.features, net.frozen_prefixes)
  features = net.features
  variables = features.trainable_variables
  compiled = tf.function(lambda x: features(x, training=False), jit_compile=True)
  other_library, = (lib for lib in hybrid_conv.INPUT_GRAD_LIBRARIES
                    if lib != hybrid_conv.DEFAULT_INPUT_GRAD_LIBRARY)
  forwards = {'tensorflow_onednn': lambda x: features(x, training=False),
              'xla': compiled,
              'hybrid_conv': lambda x: hybrid_conv.apply_plain_convnet(features, x),
              f'hybrid_conv_{other_library}_input_grad':
                  lambda x: hybrid_conv.apply_plain_convnet(features, x, other_library)}
  images = tf.random.stateless_normal([1, height, width, 3], seed=[args.seed, 4]) * 50.0
  upstream = tf.random.stateless_normal(features(images).shape, seed=[args.seed, 5])
  flop = plain_convnet_training_flop(features, height, width)
  steps = {}
  for name, forward in forwards.items():

    @tf.function
    def step(x, forward=forward):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(forward(x) * upstream)
      return tape.gradient(loss, variables)

    steps[name] = lambda step=step: common.to_host(step(images))
  # Interleaved, call by call: the ways share the machine's noisy stretches alike.
  timings = common.time_interleaved(steps, args.warmup, args.repeats)
  for name, (warm, times) in timings.items():
    rec = {'bench': 'conv_kernels', 'part': 'backbone_forward_and_gradients',
           'backbone': args.backbone, 'library': name, 'height': height, 'width': width}
    if name.startswith('hybrid_conv'):
      rec['input_grad_library'] = (hybrid_conv.DEFAULT_INPUT_GRAD_LIBRARY
                                   if name == 'hybrid_conv' else other_library)
    rec.update(common.thread_info(args.threads))
    rec.update(common.timing_fields(times, 1, warm))
    rec.update(common.roofline_fields(flop, rec['sec_per_image_median'], matmul))
    records.append(common.emit(rec))


def run(args):
  matmul = common.start('conv_kernels', args)
  records = [common.matmul_record('conv_kernels', args, matmul)]
  parts = common.parse_list(args.parts)
  if 'kernels' in parts:
    run_kernels(args, matmul, records)
  if 'backbone' in parts:
    run_backbone(args, matmul, records)
  return records


if __name__ == '__main__':
  common.script_main(build_parser, run)
