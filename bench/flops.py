"""FLOP counter for FasterRCNN, from the Keras layers' shapes at a given image size.

What is counted (per image, fp32 FLOPs = 2 x multiply-accumulates):
  * Conv2D: 2 * out_h * out_w * out_ch * k_h * k_w * in_ch / groups;
  * DepthwiseConv2D: 2 * out_h * out_w * out_ch * k_h * k_w;
  * Dense: 2 * rows * in * out.
Biases, activations, batch norm, pooling, adds, crop pooling, box decoding, top-k and
NMS are not counted: they are not matmul-like work, so they cannot be held to the matmul
roofline (their cost shows up as a lower achieved fraction).

The model's parts:
  * backbone at the image size (the layer shapes come from a symbolic run of the Keras
    graph at [1, H, W, 3]: no compute);
  * RPN head (3x3 conv + two 1x1 convs) on the feature map;
  * per-RoI head (roi_head model on one crop + cls_score + bbox_pred) times the number of
    RoIs: test_post_nms_topk (300) for inference, roi_num_samples (128) for training.

Training rule (the backward pass of a layer, relative to its forward F):
  * weight gradient: + F if the layer has trainable weights;
  * input gradient: + F if anything upstream of the layer's input is trainable (the
    gradient has to flow through it);
  so a trainable layer in the middle of the network costs 3F in a step (forward + input
  grad + weight grad), the first trainable layer 2F (it needs no input gradient: e.g.
  VGG16 block3_conv1 when conv1 / conv2 are frozen), a frozen layer above a trainable
  one 2F, and layers with nothing trainable up to and including them (VGG16 conv1-2)
  just F. The optimizer update (a few FLOPs per weight) is not counted.
  Training steps count the RoI head on roi_num_samples RoIs; the proposal layer's
  train_post_nms_topk only changes NMS work, which is not counted.

`profile_flops` cross-checks these numbers with TensorFlow's own counter
(tf.compat.v1.profiler float_ops) on the graph of a tf.function at the same size.
"""

import collections

import keras

MAC_KINDS = ('conv', 'depthwise', 'dense')

LayerCount = collections.namedtuple(
    'LayerCount', ['part', 'name', 'kind', 'input_shape', 'output_shape', 'forward',
                   'weight_grad', 'input_grad', 'weight_count'])


def _prod(values):
  out = 1
  for v in values:
    out *= int(v)
  return out


def layer_forward_flops(layer, input_shape, output_shape):
  """(kind, forward FLOPs) of one Keras layer call, kind None when nothing is counted."""
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    kh, kw = layer.kernel.shape[:2]
    return 'depthwise', 2 * _prod(output_shape) * kh * kw
  if isinstance(layer, keras.layers.Conv2D):
    kh, kw, cin_per_group, _ = layer.kernel.shape
    return 'conv', 2 * _prod(output_shape) * kh * kw * cin_per_group
  if isinstance(layer, keras.layers.Dense):
    fan_in, fan_out = layer.kernel.shape
    return 'dense', 2 * _prod(input_shape[:-1]) * fan_in * fan_out
  if isinstance(layer, keras.layers.SeparableConv2D):
    raise NotImplementedError('SeparableConv2D is not counted (no backbone uses it)')
  return None, 0


def _has_trainable_weights(layer):
  return bool(layer.trainable and layer.trainable_weights)


class _Counter:
  """Runs Keras graphs symbolically, recording every counted layer call."""

  def __init__(self):
    self.rows = []
    self._grad = {}  # id(KerasTensor) -> True if it depends on trainable weights
    self._keep = []  # keeps the symbolic tensors alive (ids must stay unique)

  def _needs_grad(self, tensors):
    return any(self._grad.get(id(t), False) for t in tensors)

  def call(self, part, layer, *args, **kwargs):
    """Symbolic call of `layer` (a Keras layer or functional model) on KerasTensors."""
    flat_in = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
    if isinstance(layer, keras.Model):
      if not hasattr(layer, '_run_through_graph'):
        raise NotImplementedError(
            f'{layer.name}: only functional Keras models are counted (this Keras has no '
            'Functional._run_through_graph)')
      outputs = layer._run_through_graph(  # pylint: disable=protected-access
          args[0], operation_fn=lambda op: (lambda *a, **k: self.call(part, op, *a, **k)))
      return outputs
    outputs = layer.compute_output_spec(*args, **kwargs)
    flat_out = [t for t in keras.tree.flatten(outputs) if isinstance(t, keras.KerasTensor)]
    input_grad = self._needs_grad(flat_in)
    weight_grad = _has_trainable_weights(layer)
    for t in flat_out:
      self._grad[id(t)] = input_grad or weight_grad
    self._keep.extend(flat_in + flat_out)
    kind, forward = layer_forward_flops(
        layer, tuple(flat_in[0].shape) if flat_in else (), tuple(flat_out[0].shape))
    if kind:
      self.rows.append(LayerCount(part, layer.name, kind, tuple(flat_in[0].shape),
                                  tuple(flat_out[0].shape), forward, weight_grad, input_grad,
                                  sum(_prod(w.shape) for w in layer.weights)))
    return outputs

  def mark(self, tensor, needs_grad):
    self._grad[id(tensor)] = needs_grad
    self._keep.append(tensor)


def count_layers(model, height, width):
  """Per-layer counts of one image at height x width: (rows, per-RoI rows, feature shape).

  rows: backbone and RPN head calls; per-RoI rows: the RoI head on one RoI (multiply by
  the number of RoIs). The graph is run symbolically: no compute.
  """
  counter = _Counter()
  image = keras.KerasTensor((1, height, width, 3), dtype='float32')
  counter.mark(image, False)
  features = counter.call('backbone', model.backbone, image)
  rpn = model.rpn_head
  x = counter.call('rpn', rpn.conv, features)
  counter.call('rpn', rpn.cls, x)
  counter.call('rpn', rpn.box, x)
  main_rows = list(counter.rows)
  # One RoI: crops [1, S, S, C] gathered from the features (gradients flow into them).
  feat_ch = features.shape[-1]
  crop_side = model.roi_head.input_shape[1]
  crops = keras.KerasTensor((1, crop_side, crop_side, feat_ch), dtype='float32')
  counter.mark(crops, counter._needs_grad([features]))  # pylint: disable=protected-access
  counter.rows = []
  head = counter.call('roi_head', model.roi_head, crops)
  counter.call('roi_head', model.cls_score, head)
  counter.call('roi_head', model.bbox_pred, head)
  return main_rows, list(counter.rows), tuple(features.shape)


def _sum(rows, what):
  total = 0
  for r in rows:
    if what == 'forward':
      total += r.forward
    elif what == 'backward':
      total += r.forward * (int(r.weight_grad) + int(r.input_grad))
    elif what == 'depthwise_backward':
      if r.kind == 'depthwise':
        total += r.forward * (int(r.weight_grad) + int(r.input_grad))
  return total


def model_flops(model, height, width, training=False, num_rois=None):
  """FLOPs of one image through `model` at height x width (see the module docstring).

  num_rois: RoIs per image through the head; default test_post_nms_topk (inference) or
  roi_num_samples (training).
  Returns a dict: total, forward, backward, by part (backbone / rpn / roi_head forward and
  backward), num_rois, feature_shape, and depthwise_backward (the part of backward that
  TF's profiler does not count).
  """
  rows, roi_rows, feature_shape = count_layers(model, height, width)
  if num_rois is None:
    num_rois = (model.proposal_targets.num_samples if training
                else model.proposal_layer.test_post_nms_topk)
  parts = {}
  for part in ('backbone', 'rpn'):
    sel = [r for r in rows if r.part == part]
    parts[part] = {'forward': _sum(sel, 'forward'),
                   'backward': _sum(sel, 'backward') if training else 0}
  parts['roi_head'] = {'forward': _sum(roi_rows, 'forward') * num_rois,
                       'backward': _sum(roi_rows, 'backward') * num_rois if training else 0,
                       'per_roi_forward': _sum(roi_rows, 'forward')}
  forward = sum(p['forward'] for p in parts.values())
  backward = sum(p['backward'] for p in parts.values()) if training else 0
  depthwise_backward = ((_sum(rows, 'depthwise_backward')
                         + _sum(roi_rows, 'depthwise_backward') * num_rois)
                        if training else 0)
  return {'training': training, 'height': height, 'width': width, 'num_rois': num_rois,
          'feature_shape': list(feature_shape), 'forward': forward, 'backward': backward,
          'total': forward + backward, 'parts': parts,
          'depthwise_backward': depthwise_backward}


def roofline_bound_seconds(model, height, width, batch, matmul_gflops, bandwidth_gbs,
                           num_rois=None, activation_bytes=4):
  """Inference seconds per image that the roofline model allows, by part: the sum over
  the counted layers (convs, depthwise convs, dense) of

      max(FLOPs / matmul GFLOP/s,  bytes / bandwidth GB/s),

  bytes = input and output activations of the layer at `activation_bytes` per value (4:
  float32; 2: float16 under mixed precision), once each (batch norm, bias and
  activation assumed fused into it) + its float32 weights once per batch of `batch`
  images. The RoI head runs on num_rois RoIs per image (default test_post_nms_topk).
  Pooling, adds, padding, crops and NMS are left out (as in the FLOP count), so real
  runs sit below the bound by at least their cost.
  Returns {'backbone', 'rpn', 'roi_head', 'total'} seconds, or None when a rate is
  missing.
  """
  if not matmul_gflops or not bandwidth_gbs:
    return None
  rows, roi_rows, _ = count_layers(model, height, width)
  if num_rois is None:
    num_rois = model.proposal_layer.test_post_nms_topk
  flops_rate, bytes_rate = matmul_gflops * 1e9, bandwidth_gbs * 1e9

  def bound(row, copies):
    activations = float(activation_bytes) * (_prod(row.input_shape) + _prod(row.output_shape)) * copies
    weights = 4.0 * row.weight_count / batch
    return max(row.forward * copies / flops_rate, (activations + weights) / bytes_rate)
  parts = {part: sum(bound(r, 1) for r in rows if r.part == part)
           for part in ('backbone', 'rpn')}
  parts['roi_head'] = sum(bound(r, num_rois) for r in roi_rows)
  parts['total'] = sum(parts.values())
  return parts


# ---- TensorFlow's profiler, for the cross-check ----

PROFILER_MAC_OPS = ('Conv2D', 'DepthwiseConv2dNative', 'MatMul', 'BatchMatMul',
                    'BatchMatMulV2', 'BatchMatMulV3', 'Conv2DBackpropInput',
                    'Conv2DBackpropFilter')


def _live_op_names(concrete_fn):
  """Names of the ops that the function's outputs depend on.

  The gradient of a layer whose input gradient nobody uses (the first trainable layer)
  still creates a Conv2DBackpropInput op in the traced graph; TF's runtime prunes it, so
  the cross-check leaves it out too.
  """
  import tensorflow as tf
  graph_def = concrete_fn.graph.as_graph_def()
  outputs = [t.op.name for t in concrete_fn.graph.outputs]
  pruned = tf.compat.v1.graph_util.extract_sub_graph(graph_def, outputs)
  return {node.name for node in pruned.node}


def _walk(node):
  yield node
  for child in node.children:
    yield from _walk(child)


def profile_flops(concrete_fn):
  """float_ops of a concrete function's graph by op type, from TF's profiler.

  Runs tf.compat.v1.profiler.profile(graph, cmd='scope', float_operation options) on the
  traced graph (where every shape is static), then keeps the ops the outputs depend on.
  Returns {'total': all float ops, 'mac_ops': the Conv / MatMul kinds, 'by_op': {...},
  'unregistered': MAC-like op types in the graph that the profiler has no FLOP rule for,
  'incomplete_shapes': op types it skipped for want of static shapes}.
  """
  import tensorflow as tf
  graph = concrete_fn.graph
  live = _live_op_names(concrete_fn)
  opts = (tf.compat.v1.profiler.ProfileOptionBuilder(
      tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
          .with_empty_output().build())
  result = tf.compat.v1.profiler.profile(graph, cmd='scope', options=opts)
  by_op = collections.Counter()
  for node in _walk(result):
    if node.float_ops and node.name in live:
      by_op[graph.get_operation_by_name(node.name).type] += int(node.float_ops)
  live_ops = [graph.get_operation_by_name(n) for n in live]
  types = {op.type for op in live_ops}
  unregistered = sorted(t for t in types if t.startswith('DepthwiseConv2dNativeBackprop'))
  incomplete = sorted({op.type for op in live_ops if op.type in PROFILER_MAC_OPS
                       and not all(t.shape.is_fully_defined()
                                   for t in list(op.inputs) + list(op.outputs))})
  return {'total': sum(by_op.values()),
          'mac_ops': sum(v for k, v in by_op.items() if k in PROFILER_MAC_OPS),
          'by_op': dict(by_op), 'unregistered': unregistered,
          'incomplete_shapes': incomplete}


def inference_concrete_function(model, batch, height, width):
  import tensorflow as tf
  fn = tf.function(model.detect)
  return fn.get_concrete_function(tf.TensorSpec([batch, height, width, 3], tf.float32),
                                  tf.TensorSpec([batch, 2], tf.int32))


def training_concrete_function(model, batch, height, width, max_boxes=20):
  """Forward + losses + gradients of the trainable variables (the update is not counted)."""
  import tensorflow as tf
  from faster_rcnn_tf import inputs

  def grads(images, image_sizes, gt_boxes, gt_classes):
    batch_dict = {inputs.IMAGES: images, inputs.IMAGE_SIZES: image_sizes,
                  inputs.GT_BOXES: gt_boxes, inputs.GT_CLASSES: gt_classes}
    with tf.GradientTape() as tape:
      losses = model.compute_losses(batch_dict, seed=tf.constant([0, 0], tf.int32))
    return tape.gradient(losses['total_loss'], model.trainable_variables)

  return tf.function(grads).get_concrete_function(
      tf.TensorSpec([batch, height, width, 3], tf.float32), tf.TensorSpec([batch, 2], tf.int32),
      tf.TensorSpec([batch, max_boxes, 4], tf.float32),
      tf.TensorSpec([batch, max_boxes], tf.int32))


def cross_check(model, height, width, training=False, batch=1):
  """Our count vs TF's profiler on the same graph; returns a dict of both (per image)."""
  ours = model_flops(model, height, width, training=training)
  cf = (training_concrete_function(model, batch, height, width) if training
        else inference_concrete_function(model, batch, height, width))
  prof = profile_flops(cf)
  # The profiler has no rule for depthwise-conv gradients: leave them out of ours too.
  comparable = ours['total'] - ours['depthwise_backward']
  prof_mac = prof['mac_ops'] / batch
  return {'training': training, 'height': height, 'width': width, 'batch': batch,
          'num_rois': ours['num_rois'],
          'counter_gflop_per_image': ours['total'] / 1e9,
          'counter_comparable_gflop': comparable / 1e9,
          'profiler_mac_gflop_per_image': prof_mac / 1e9,
          'profiler_all_gflop_per_image': prof['total'] / batch / 1e9,
          'profiler_by_op_gflop': {k: v / batch / 1e9 for k, v in sorted(prof['by_op'].items())},
          'profiler_unregistered_ops': prof['unregistered'],
          'profiler_incomplete_shape_ops': prof['incomplete_shapes'],
          'relative_difference': (prof_mac - comparable) / comparable if comparable else None}
