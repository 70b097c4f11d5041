"""Where inference time goes: each stage of FasterRCNN.detect timed on its own.

    python bench/bench_stages.py [--backbones=vgg16] [--sizes=600x800] [--batches=1]
        [--xla=off|on|both] [--repeats=3] [--warmup=1] [--threads=2] [--trace_dir=DIR]

Stages (each its own tf.function, fed the previous stage's outputs, computed once
beforehand), in the order of `FasterRCNN.detect`:
  backbone    normalize + mask + backbone convolutions -> features
  rpn_head    RPN 3x3 conv + 1x1 convs + foreground softmax
  proposals   anchors, box decoding, pre-NMS top-k, per-image NMS (ProposalLayer)
  roi_crop    crop_pool: bilinear crops (gathers) [+ 2x2 max pool for VGG16]
  roi_head    the per-RoI head (fc6/fc7 or conv5) + cls_score + bbox_pred
  detections  class softmax + DetectionGenerator (per-class decode, NMS, top-k)
plus "total": the whole tf.function(model.detect), and "stage_sum".
Prints one JSON line per stage: seconds per image (median / min / max), share of the
stage sum, GFLOP (convolution / dense stages) and the fraction of this run's matmul
GFLOP/s, and for those stages the roofline model's bound (bound_sec_per_image: each layer
at the matmul rate or at the memory bandwidth, whichever is slower; bound_fraction =
bound / measured; see flops.roofline_bound_seconds). --trace_dir writes a TensorBoard profiler trace of 2 calls of the whole detect
(open with tensorboard --logdir=DIR, Profile tab: per-op times).
"""

import argparse
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import common  # pylint: disable=wrong-import-position

STAGES = ('backbone', 'rpn_head', 'proposals', 'roi_crop', 'roi_head', 'detections')


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--backbones', default='vgg16')
  parser.add_argument('--sizes', default='600x800')
  parser.add_argument('--batches', default='1')
  parser.add_argument('--xla', default='off', choices=('off', 'on', 'both'))
  parser.add_argument('--num_rois', type=int, default=300, help='test_post_nms_topk.')
  parser.add_argument('--trace_dir', default='', help='Write a profiler trace here.')
  common.add_common_args(parser, repeats=3, warmup=1)
  return parser


def stage_functions(model, jit):
  """{stage: tf.function}, each mirroring one piece of `FasterRCNN.detect`."""
  import tensorflow as tf
  from faster_rcnn_tf.ops import roi_pooling

  def backbone(images, image_sizes):
    return model.extract_features(images, image_sizes)

  def rpn_head(features):
    logits, deltas = model.rpn_head(features)
    fg_prob = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)[..., 1]
    return fg_prob, deltas

  def proposals(features, fg_prob, deltas, image_sizes):
    anchors = model.anchors_for(features)
    rois, _, roi_valid = model.proposal_layer(fg_prob, deltas, anchors, image_sizes,
                                              training=False)
    return rois, roi_valid

  def roi_crop(features, rois):
    return roi_pooling.crop_pool(features, rois, model.stride, model.crop_size,
                                 model.crop_max_pool)

  def roi_head(crops, rois):
    num_images, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    x = model.roi_head(crops, training=False)
    logits = tf.reshape(model.cls_score(x), [num_images, num_rois, model.num_classes + 1])
    deltas = tf.reshape(model.bbox_pred(x), [num_images, num_rois, 4 * (model.num_classes + 1)])
    return logits, deltas

  def detections(rois, roi_valid, cls_logits, box_deltas, image_sizes):
    probs = tf.nn.softmax(tf.cast(cls_logits, tf.float32), axis=-1)
    return model.detection_generator(rois, roi_valid, probs, box_deltas, image_sizes)

  fns = dict(backbone=backbone, rpn_head=rpn_head, proposals=proposals, roi_crop=roi_crop,
             roi_head=roi_head, detections=detections)
  return {k: tf.function(v, jit_compile=jit) for k, v in fns.items()}


def run(args):
  import tensorflow as tf
  from bench import flops as flops_lib

  jits = {'off': [False], 'on': [True], 'both': [False, True]}[args.xla]
  matmul = common.start('stages', args)
  records = [common.matmul_record('stages', args, matmul)]
  for backbone in common.parse_list(args.backbones):
    model = common.build_model(backbone, args.num_classes, args.seed,
                               test_post_nms_topk=args.num_rois)
    for jit in jits:
      mode = 'xla' if jit else 'tf_function'
      fns = stage_functions(model, jit)
      full = tf.function(model.detect, jit_compile=jit)
      for height, width in common.parse_sizes(args.sizes):
        flop = flops_lib.model_flops(model, height, width)
        for batch in common.parse_ints(args.batches):
          images, image_sizes = common.random_images(batch, height, width, args.seed)
          images, image_sizes = tf.constant(images), tf.constant(image_sizes)
          # Each stage's inputs: the previous stages' outputs, computed once.
          features = fns['backbone'](images, image_sizes)
          fg_prob, deltas = fns['rpn_head'](features)
          rois, roi_valid = fns['proposals'](features, fg_prob, deltas, image_sizes)
          crops = fns['roi_crop'](features, rois)
          cls_logits, box_deltas = fns['roi_head'](crops, rois)
          calls = {
              'backbone': lambda: fns['backbone'](images, image_sizes),
              'rpn_head': lambda: fns['rpn_head'](features),
              'proposals': lambda: fns['proposals'](features, fg_prob, deltas, image_sizes),
              'roi_crop': lambda: fns['roi_crop'](features, rois),
              'roi_head': lambda: fns['roi_head'](crops, rois),
              'detections': lambda: fns['detections'](rois, roi_valid, cls_logits, box_deltas,
                                                      image_sizes),
              'total': lambda: full(images, image_sizes),
          }
          bound = flops_lib.roofline_bound_seconds(model, height, width, batch,
                                                   matmul['matmul_gflops'],
                                                   matmul.get('bandwidth_gbs'),
                                                   activation_bytes=common.activation_bytes()
                                                   ) or {}
          stage_bounds = {'backbone': bound.get('backbone'), 'rpn_head': bound.get('rpn'),
                          'roi_head': bound.get('roi_head'), 'total': bound.get('total')}
          stage_flops = {'backbone': flop['parts']['backbone']['forward'],
                         'rpn_head': flop['parts']['rpn']['forward'],
                         'roi_head': flop['parts']['roi_head']['forward'],
                         'total': flop['total']}
          results = {}
          for name, call in calls.items():
            warm, times = common.time_fn(lambda: common.to_host(call()),  # pylint: disable=cell-var-from-loop
                                         args.warmup, args.repeats)
            results[name] = common.timing_fields(times, batch, warm)
          stage_sum = sum(results[s]['sec_per_image_median'] for s in STAGES)
          for name in STAGES + ('total',):
            fields = results[name]
            rec = {'bench': 'stages', 'stage': name,
                   'config': f'{backbone}/voc{args.num_classes}/rois{args.num_rois}',
                   'backbone': backbone, 'mode': mode, 'height': height, 'width': width,
                   'batch': batch, 'num_rois': args.num_rois}
            rec.update(common.thread_info(args.threads))
            rec.update(fields)
            rec['share_of_stage_sum'] = common._round(  # pylint: disable=protected-access
                fields['sec_per_image_median'] / stage_sum, 4)
            rec.update(common.roofline_fields(stage_flops.get(name),
                                              fields['sec_per_image_median'], matmul))
            rec.update(common.bound_fields(stage_bounds.get(name),
                                           fields['sec_per_image_median']))
            if name == 'total':
              rec['stage_sum_sec_per_image'] = common._round(stage_sum)  # pylint: disable=protected-access
            rec['load_avg'] = common.host_fields()['load_avg']
            records.append(common.emit(rec))
          if args.trace_dir:
            tf.profiler.experimental.start(args.trace_dir)
            for _ in range(2):
              common.to_host(full(images, image_sizes))
            tf.profiler.experimental.stop()
            common.note(f'profiler trace of {backbone} {mode} {height}x{width} batch {batch} '
                        f'written to {args.trace_dir}')
  return records


if __name__ == '__main__':
  common.script_main(build_parser, run)
