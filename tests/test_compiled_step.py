"""The whole training step and inference compiled with XLA: no op of data-dependent shape,
no host callback, no NMS kernel (the proposal layer's and the head's NMS take the tiled
plain-ops form under XLA), and the compiled step runs with the losses of the plain one."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf import inputs
from faster_rcnn_tf.model import FasterRCNN
from tests.step_helpers import graph_op_types, make_train_step

TINY = dict(backbone='tiny', anchor_scales=(1, 2, 4), rpn_channels=32,
            train_pre_nms_topk=600, train_post_nms_topk=64, test_pre_nms_topk=300,
            test_post_nms_topk=32, roi_num_samples=32, max_detections=10)

# Ops whose output shape depends on the data (XLA rejects them or needs bounds), host
# callbacks, and TF's NMS kernels (XLA lowers them to a slow loop).
DYNAMIC_SHAPE_OPS = {'Where', 'Unique', 'UniqueV2', 'UniqueWithCounts', 'ListDiff',
                     'DynamicPartition', 'DynamicStitch', 'SparseToDense', 'RaggedRange',
                     'NonZero', 'StringFormat'}
HOST_CALLBACK_OPS = {'PyFunc', 'PyFuncStateless', 'EagerPyFunc', 'NumpyFunction'}


def _batch():
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, size=(2, 96, 96, 3)).astype(np.float32)
  boxes = np.array([[[10, 12, 50, 60], [40, 30, 90, 80]],
                    [[20, 20, 70, 50], [0, 0, 0, 0]]], np.float32)
  classes = np.array([[1, 2], [3, 0]], np.int32)
  return {inputs.IMAGES: tf.constant(images),
          inputs.IMAGE_SIZES: tf.constant([[96, 96], [80, 90]], tf.int32),
          inputs.GT_BOXES: tf.constant(boxes), inputs.GT_CLASSES: tf.constant(classes)}


def test_compiled_training_step_has_static_shapes_and_no_host_ops():
  keras.utils.set_random_seed(0)
  model = FasterRCNN(3, **TINY)  # nms methods 'auto'
  optimizer = keras.optimizers.SGD(0.001, momentum=0.9)
  optimizer.build(model.trainable_variables)
  initial = [v.numpy() for v in model.variables]
  batch, seed = _batch(), tf.constant([1, 2])

  compiled = make_train_step(model, optimizer, jit=True)
  ops = graph_op_types(compiled.get_concrete_function(batch, seed))
  assert {'MatMul', 'Conv2D'} <= ops and ('While' in ops or 'StatelessWhile' in ops)
  assert not ops & HOST_CALLBACK_OPS, ops & HOST_CALLBACK_OPS
  assert not ops & DYNAMIC_SHAPE_OPS, ops & DYNAMIC_SHAPE_OPS
  assert not {op for op in ops if op.startswith('NonMaxSuppression')}
  # Every tensor of the step's own graph has a static shape.
  dynamic = [(op.name, out.shape) for op in compiled.get_concrete_function(
      batch, seed).graph.get_operations() for out in op.outputs
             if out.dtype != tf.resource and not out.shape.is_fully_defined()]
  assert not dynamic, dynamic

  # It compiles (jit_compile=True refuses any op XLA cannot compile) and runs, with the
  # losses of the uncompiled step (TF's NMS kernel on this CPU).
  jit_losses = {k: float(v) for k, v in compiled(batch, seed)[0].items()}
  for v, value in zip(model.variables, initial):
    v.assign(value)
  plain = make_train_step(model, optimizer, jit=False)
  assert any(op.startswith('NonMaxSuppression')
             for op in graph_op_types(plain.get_concrete_function(batch, seed)))
  plain_losses = {k: float(v) for k, v in plain(batch, seed)[0].items()}
  assert np.isfinite(list(jit_losses.values())).all()
  for k, v in plain_losses.items():
    assert jit_losses[k] == pytest.approx(v, abs=1e-4), k


def test_compiled_inference_has_no_nms_kernel_and_runs():
  keras.utils.set_random_seed(1)
  model = FasterRCNN(3, **dict(TINY, inference_splits=1, score_threshold=0.0))
  batch = _batch()
  compiled = tf.function(model.detect, jit_compile=True)
  concrete = compiled.get_concrete_function(batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES])
  ops = graph_op_types(concrete)
  assert not ops & (HOST_CALLBACK_OPS | DYNAMIC_SHAPE_OPS)
  assert not {op for op in ops if op.startswith('NonMaxSuppression')}
  got = compiled(batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES])
  want = tf.function(model.detect)(batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES])
  assert int(tf.reduce_sum(want[inputs.NUM_DETECTIONS])) > 0
  for key in want:
    np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), atol=1e-3)
