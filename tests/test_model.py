"""End-to-end tests of faster_rcnn_tf.model.FasterRCNN with the tiny backbone."""

import glob
import os
import re
import tokenize

import keras
import numpy as np
import pytest
import tensorflow as tf

from faster_rcnn_tf import inputs
from faster_rcnn_tf import model as model_lib
from faster_rcnn_tf.model import FasterRCNN
from tests import np_reference
from tests import step_helpers

_np_iou = np_reference.iou

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL = dict(backbone='tiny', anchor_scales=(1, 2, 4), rpn_channels=64,
             train_pre_nms_topk=256, train_post_nms_topk=64, test_pre_nms_topk=256,
             test_post_nms_topk=32, roi_num_samples=32, max_detections=20)


def _model(seed=0, **overrides):
  keras.utils.set_random_seed(seed)
  return FasterRCNN(3, **dict(SMALL, **overrides))


def _scene(seed, height, width, boxes, classes):
  """Noisy background with one filled shape per box: class 1 red rectangle, 2 green
  rectangle, 3 blue disk."""
  rng = np.random.default_rng(seed)
  img = rng.uniform(60, 120, size=(height, width, 3)).astype(np.float32)
  colors = {1: (230, 40, 40), 2: (40, 230, 40), 3: (40, 40, 230)}
  yy, xx = np.mgrid[0:height, 0:width] + 0.5
  for (y1, x1, y2, x2), c in zip(boxes, classes):
    if c == 3:
      cy, cx, ry, rx = (y1 + y2) / 2, (x1 + x2) / 2, (y2 - y1) / 2, (x2 - x1) / 2
      inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    else:
      inside = (yy >= y1) & (yy < y2) & (xx >= x1) & (xx < x2)
    img[inside] = np.array(colors[c], np.float32) + rng.normal(0, 5, size=(inside.sum(), 3))
  return np.clip(img, 0, 255)


def _batch(images, sizes, gt_boxes, gt_classes):
  """Pads images to the largest size (bottom / right) and gt to a common count."""
  hp = max(i.shape[0] for i in images)
  wp = max(i.shape[1] for i in images)
  g = max(len(b) for b in gt_boxes)
  out_images = np.zeros([len(images), hp, wp, 3], np.float32)
  boxes = np.zeros([len(images), g, 4], np.float32)
  classes = np.zeros([len(images), g], np.int32)
  for k, im in enumerate(images):
    out_images[k, :im.shape[0], :im.shape[1]] = im
    boxes[k, :len(gt_boxes[k])] = gt_boxes[k]
    classes[k, :len(gt_classes[k])] = gt_classes[k]
  return {inputs.IMAGES: tf.constant(out_images),
          inputs.IMAGE_SIZES: tf.constant(np.array(sizes, np.int32)),
          inputs.GT_BOXES: tf.constant(boxes), inputs.GT_CLASSES: tf.constant(classes)}


# ---- losses without ground truth ----

def test_no_ground_truth_gives_finite_losses_and_zero_box_losses():
  model = _model()
  rng = np.random.default_rng(0)
  images = [rng.uniform(0, 255, (64, 96, 3)), rng.uniform(0, 255, (48, 80, 3))]
  batch = _batch(images, [[64, 96], [48, 80]], [np.zeros([2, 4])] * 2, [np.zeros([2])] * 2)
  out = model.compute_losses(batch, seed=tf.constant([1, 2]))
  assert set(out) == set(model_lib.LOSS_NAMES)
  values = {k: float(v) for k, v in out.items()}
  assert all(np.isfinite(v) for v in values.values()), values
  assert values['rpn_box_loss'] == 0.0 and values['head_box_loss'] == 0.0
  assert values['rpn_class_loss'] > 0 and values['head_class_loss'] > 0
  assert values['total_loss'] == pytest.approx(values['rpn_class_loss']
                                               + values['head_class_loss'], rel=1e-6)
  # Gradients are finite too.
  with tf.GradientTape() as tape:
    total = model.compute_losses(batch, seed=tf.constant([1, 2]))['total_loss']
  grads = tape.gradient(total, model.trainable_variables)
  assert all(g is None or np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads)


def test_call_dispatches_on_training_flag():
  model = _model()
  rng = np.random.default_rng(1)
  batch = _batch([rng.uniform(0, 255, (64, 64, 3))], [[64, 64]], [np.array([[8, 8, 40, 48]])],
                 [np.array([2])])
  losses = model(batch, training=True)
  assert set(losses) == set(model_lib.LOSS_NAMES)
  dets = model(batch)
  assert dets[inputs.DETECTION_BOXES].shape == (1, 20, 4)
  assert dets[inputs.DETECTION_CLASSES].dtype == tf.int32
  assert dets[inputs.NUM_DETECTIONS].shape == (1,)


def test_valid_pixel_mask():
  mask = model_lib.valid_pixel_mask(tf.constant([[2, 3], [4, 1]]), 4, 5).numpy()[..., 0]
  want = np.zeros([2, 4, 5])
  want[0, :2, :3] = 1
  want[1, :4, :1] = 1
  np.testing.assert_array_equal(mask, want)


# ---- reduced precision ----

@pytest.mark.parametrize('policy', ['mixed_float16', 'mixed_bfloat16'])
def test_reduced_precision_inference_tracks_float32(policy):
  """Under a mixed policy (--precision) the convolutions run in 16 bits (bfloat16 also
  through the RoI crops, which TF's kernel takes only as float16 / float32) and the
  detections stay float32."""
  batch, _, _ = _scene_batch()
  images, sizes = batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES]
  reference = _model(seed=0)
  want = reference.extract_features(images, sizes).numpy()
  keras.mixed_precision.set_global_policy(policy)
  try:
    model = _model(seed=0)
    model.set_weights(reference.get_weights())
    features = model.extract_features(images, sizes)
    detections = tf.function(model.detect)(images, sizes)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  assert features.dtype == keras.mixed_precision.Policy(policy).compute_dtype
  got = tf.cast(features, tf.float32).numpy()
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-2
  boxes = detections[inputs.DETECTION_BOXES].numpy()
  assert detections[inputs.DETECTION_BOXES].dtype == tf.float32
  assert detections[inputs.DETECTION_SCORES].dtype == tf.float32
  assert int(detections[inputs.NUM_DETECTIONS][0]) > 0
  assert np.isfinite(boxes).all() and boxes.min() >= 0 and boxes.max() <= 128


# ---- batching ----

def _spread_scores_model(**overrides):
  """A random tiny model whose head scores are spread out, so that the detection order
  is well defined."""
  model = _model(seed=3, score_threshold=0.01, max_detections=30, **overrides)
  kernel = model.cls_score.kernel
  kernel.assign(tf.random.stateless_normal(kernel.shape, seed=[7, 7], stddev=0.3))
  return model


def test_batch_of_two_sizes_matches_each_image_alone():
  model = _spread_scores_model(inference_splits=1)  # one batch through every op
  rng = np.random.default_rng(2)
  img_a = rng.uniform(0, 255, (80, 64, 3)).astype(np.float32)
  img_b = rng.uniform(0, 255, (64, 96, 3)).astype(np.float32)
  canvas = (80, 96)

  def padded(img):
    out = np.zeros(canvas + (3,), np.float32)
    out[:img.shape[0], :img.shape[1]] = img
    return out

  both = np.stack([padded(img_a), padded(img_b)])
  sizes = np.array([[80, 64], [64, 96]], np.int32)
  detect = tf.function(model.detect)
  together = {k: v.numpy() for k, v in detect(tf.constant(both), tf.constant(sizes)).items()}
  # Garbage in the padding must not matter: the model zeroes pixels outside image_sizes.
  noisy = both.copy()
  noisy[0, :, 64:] = 255.0
  noisy[1, 64:] = 255.0
  together_noisy = detect(tf.constant(noisy), tf.constant(sizes))
  for k in together:
    np.testing.assert_allclose(together_noisy[k].numpy(), together[k], atol=1e-4)
  for b in range(2):
    alone = detect(tf.constant(both[b:b + 1]), tf.constant(sizes[b:b + 1]))
    n = int(alone[inputs.NUM_DETECTIONS][0])
    assert n > 0, 'expected detections from the random model'
    assert together[inputs.NUM_DETECTIONS][b] == n
    for k in (inputs.DETECTION_BOXES, inputs.DETECTION_SCORES, inputs.DETECTION_CLASSES):
      np.testing.assert_allclose(together[k][b], alone[k].numpy()[0], atol=1e-4)
    boxes = together[inputs.DETECTION_BOXES][b][:n]
    assert np.all(boxes[:, [0, 2]] <= sizes[b, 0]) and np.all(boxes[:, [1, 3]] <= sizes[b, 1])
    # The raw RPN proposals agree as well.
    feats = model.extract_features(tf.constant(both), tf.constant(sizes))
    rois_together = model.rpn(feats, tf.constant(sizes), training=False)[3].numpy()[b]
    feats1 = model.extract_features(tf.constant(both[b:b + 1]), tf.constant(sizes[b:b + 1]))
    rois_alone = model.rpn(feats1, tf.constant(sizes[b:b + 1]), training=False)[3].numpy()[0]
    np.testing.assert_allclose(rois_together, rois_alone, atol=1e-4)



def test_inference_splits_give_the_detections_of_the_whole_batch():
  """detect as concurrent sub-batches (batch_splitting) against one batch, for a known
  batch size and an unknown one (SavedModel signatures, evaluation datasets)."""
  whole = _spread_scores_model(inference_splits=1)
  split = _spread_scores_model(inference_splits=2)
  rng = np.random.default_rng(5)
  sizes = np.array([[80, 64], [64, 96], [72, 72], [80, 96], [50, 60]], np.int32)
  images = np.zeros((5, 80, 96, 3), np.float32)
  for i, (h, w) in enumerate(sizes):
    images[i, :h, :w] = rng.uniform(0, 255, (h, w, 3))
  expected = {k: v.numpy() for k, v in tf.function(whole.detect)(images, sizes).items()}
  assert expected[inputs.NUM_DETECTIONS].min() > 0, 'expected detections from every image'
  unknown_batch = tf.function(split.detect, input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([None, 2], tf.int32)])
  def crops_in_graph(model):  # one CropAndResize per (sub-)batch run
    graph = tf.function(model.detect).get_concrete_function(images, sizes).graph
    return sum(op.type == 'CropAndResize' for op in graph.get_operations())
  assert (crops_in_graph(whole), crops_in_graph(split)) == (1, 2)
  for run in (tf.function(split.detect), unknown_batch):
    for count in (5, 1):
      got = run(tf.constant(images[:count]), tf.constant(sizes[:count]))
      for k, value in expected.items():
        np.testing.assert_allclose(got[k].numpy(), value[:count], atol=1e-5, err_msg=k)


def test_inference_splits_refuses_a_bad_value():
  with pytest.raises(ValueError, match='inference_splits.*0'):
    _model(inference_splits=0)

# ---- the compiled training step ----

def _scene_batch():
  # A red 44 x 80 rectangle, a green 60 x 60 square and a blue disk of diameter 34, each
  # near (not on) an anchor of scales (1, 2, 4): best anchor IoUs 0.80, 0.78, 0.84.
  boxes = np.array([[18, 16, 62, 96], [64, 10, 124, 70], [71, 85, 105, 119]], np.float32)
  classes = np.array([1, 2, 3], np.int32)
  image = _scene(0, 128, 128, boxes, classes)
  return _batch([image], [[128, 128]], [boxes], [classes]), boxes, classes


class _Trainer:
  """A tiny model, an optimizer and a compiled training step (the whole step: forward,
  losses, gradients, update) per requested jit setting."""

  def __init__(self, optimizer, jit_settings=(False, True)):
    # Inference keeps 100 proposals: after training, the untrained 'ignored' anchors
    # around the objects also score high and would crowd out a third object in 32.
    self.model = _model(seed=0, rpn_channels=64, test_pre_nms_topk=600,
                        test_post_nms_topk=100, score_threshold=0.3, max_detections=10)
    self.optimizer = optimizer
    self.optimizer.build(self.model.trainable_variables)
    self.initial = [v.numpy() for v in self.model.variables]
    self.optimizer_initial = [v.numpy() for v in self.optimizer.variables]
    self.steps = {jit: self._make_step(jit) for jit in jit_settings}

  def _make_step(self, jit):
    return step_helpers.make_train_step(self.model, self.optimizer, jit)

  def reset(self):
    for v, value in zip(self.model.variables, self.initial):
      v.assign(value)
    for v, value in zip(self.optimizer.variables, self.optimizer_initial):
      v.assign(value)  # iterations, momenta (and the learning rate, kept)


LEARNING_STEPS = 300


def test_training_step_same_with_and_without_xla():
  trainer = _Trainer(keras.optimizers.SGD(0.01, momentum=0.9))
  batch, _, _ = _scene_batch()
  results = {}
  for jit in (False, True):
    trainer.reset()
    history = []
    for i in range(3):
      losses, has_grad = trainer.steps[jit](batch, tf.constant([1, 2 + i]))
      history.append({k: float(v) for k, v in losses.items()})
    assert all(h for h in has_grad), 'every trainable variable gets a gradient'
    results[jit] = (history, [v.numpy() for v in trainer.model.trainable_variables])
  (hist_plain, w_plain), (hist_jit, w_jit) = results[False], results[True]
  for a, b in zip(hist_plain, hist_jit):
    for k in model_lib.LOSS_NAMES:
      assert a[k] == pytest.approx(b[k], abs=1e-4), (k, a, b)
  assert all(np.isfinite(v) for h in hist_plain for v in h.values())
  assert hist_plain[0]['rpn_box_loss'] > 0 and hist_plain[0]['head_box_loss'] > 0
  # The update happened (weights moved) and is the same in both.
  initial = dict(zip([v.path for v in trainer.model.variables], trainer.initial))
  moved = [not np.allclose(w, initial[v.path])
           for w, v in zip(w_plain, trainer.model.trainable_variables)]
  assert all(moved)
  for a, b in zip(w_plain, w_jit):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.usefixtures('op_determinism')
def test_compile_backbone_trains_with_the_same_losses_and_gradients():
  """compile_backbone's hybrid training kernels (ops.hybrid_conv) change speed only."""
  batch, _, _ = _scene_batch()
  seed = tf.constant([3, 4])
  results = _losses_and_grads_with_and_without_compile_backbone(batch, seed)
  (plain_losses, plain_grads), (hybrid_losses, hybrid_grads) = results
  for k in model_lib.LOSS_NAMES:
    assert float(hybrid_losses[k]) == pytest.approx(float(plain_losses[k]), abs=1e-5), k
  assert len(plain_grads) == len(hybrid_grads)
  for a, b in zip(plain_grads, hybrid_grads):
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-3, atol=1e-5)


def _losses_and_grads_with_and_without_compile_backbone(batch, seed):
  results = []
  for compile_backbone in (False, True):
    model = _model(seed=0, compile_backbone=compile_backbone)
    assert model._hybrid_training == compile_backbone  # pylint: disable=protected-access

    @tf.function
    def losses_and_grads(batch, model=model):
      with tf.GradientTape() as tape:
        losses = model.compute_losses(batch, seed=seed)
      return losses, tape.gradient(losses['total_loss'], model.trainable_variables)

    results.append(losses_and_grads(batch))
  return results


def _batch_norm_state(model):
  bns = [l for l in model.backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
  return bns, [l.moving_variance.numpy().copy() for l in bns]


@pytest.mark.parametrize('train_batch_norm', [False, True])
def test_batch_norm_is_frozen_unless_trained(train_batch_norm):
  """Frozen (the default): no BN parameter trains and training leaves the moving
  statistics alone. Trained: gamma / beta get gradients and a training forward pass
  moves the moving variances toward the batch's (except in the early blocks that
  freeze_early_layers freezes)."""
  model = _model(seed=0, backbone='mobilenet_v2', train_batch_norm=train_batch_norm)
  bns, before = _batch_norm_state(model)
  assert len(bns) > 10
  trainable_bn = [v for v in model.trainable_variables
                  if any(v is w for l in bns for w in l.trainable_variables)]
  assert bool(trainable_bn) == train_batch_norm
  batch, _, _ = _scene_batch()
  with tf.GradientTape() as tape:
    losses = model.compute_losses(batch, seed=tf.constant([1, 1]))
  grads = tape.gradient(losses['total_loss'], trainable_bn)
  assert all(g is not None and np.any(g.numpy() != 0) for g in grads)
  _, after = _batch_norm_state(model)
  moved = [not np.allclose(a, b) for a, b in zip(before, after)]
  assert [b.name for b, m in zip(bns, moved) if m] == [
      b.name for b in bns if train_batch_norm and b.trainable]
  # Inference always uses the moving statistics, never the batch's: an image's features
  # do not depend on the other images of its batch (the second image is bright noise in
  # one batch and dark noise in the other), and inference moves no statistics. (Frozen
  # batch norm cannot use batch statistics at all; trained batch norm could, if inference
  # ran it in training mode.)
  images, sizes = batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES]
  rng = np.random.default_rng(5)
  bright = rng.uniform(150, 255, images.shape).astype(np.float32)
  dark = rng.uniform(0, 60, images.shape).astype(np.float32)
  pair_sizes = np.concatenate([sizes, sizes])
  if train_batch_norm:
    # Random weights with the initial statistics saturate (the features ignore the
    # input); one training pass with momentum 0 sets every moving statistic to that
    # batch's, as a trained network's would be, so that the features depend on the input.
    momentums = [b.momentum for b in bns]
    for b in bns:
      b.momentum = 0.0
    model.extract_features(np.concatenate([images, bright, dark]),
                           np.concatenate([sizes] * 3), training=True)
    for b, m in zip(bns, momentums):
      b.momentum = m
    _, after = _batch_norm_state(model)
  with_bright = model.extract_features(np.concatenate([images, bright]), pair_sizes).numpy()
  with_dark = model.extract_features(np.concatenate([images, dark]), pair_sizes).numpy()
  alone = model.extract_features(images, sizes).numpy()
  scale = np.abs(alone).max()  # random weights: small features; compare relative to them
  assert scale > 0
  if train_batch_norm:  # (frozen random mobilenet_v2 saturates: its features ignore input)
    assert np.abs(with_bright[1] - with_dark[1]).max() > 0.1 * scale  # inputs matter
  assert np.abs(with_bright[0] - alone[0]).max() <= 1e-4 * scale
  assert np.abs(with_dark[0] - alone[0]).max() <= 1e-4 * scale
  _, after_inference = _batch_norm_state(model)
  for a, b in zip(after, after_inference):
    np.testing.assert_array_equal(a, b)


@pytest.mark.usefixtures('op_determinism')
def test_learns_a_synthetic_scene():
  # Adam: with SGD the RPN's few positive anchors (1-2 per object, 1/256 of the
  # normalized loss each) take far more than a few hundred steps to learn.
  schedule = keras.optimizers.schedules.CosineDecay(1e-3, LEARNING_STEPS, alpha=0.02)
  trainer = _Trainer(keras.optimizers.Adam(schedule), jit_settings=(True,))
  batch, boxes, classes = _scene_batch()
  step = trainer.steps[True]
  totals = []
  for i in range(LEARNING_STEPS):
    losses, _ = step(batch, tf.constant([i, 11]))
    totals.append(float(losses['total_loss']))
  first = np.mean(totals[:3])
  last = np.mean(totals[-20:])
  assert last <= 0.1 * first, (first, last, totals[::25])
  dets = trainer.model.detect(batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES])
  n = int(dets[inputs.NUM_DETECTIONS][0])
  det_boxes = dets[inputs.DETECTION_BOXES].numpy()[0][:n]
  det_classes = dets[inputs.DETECTION_CLASSES].numpy()[0][:n]
  det_scores = dets[inputs.DETECTION_SCORES].numpy()[0][:n]
  ious = _np_iou(boxes, det_boxes)  # [3, n]
  for g in range(len(boxes)):
    hits = (ious[g] >= 0.7) & (det_classes == classes[g])
    assert hits.any(), (g, det_boxes, det_classes, det_scores, ious[g])
  print(f'learning: loss {first:.3f} -> {last:.4f}, {n} detections')


# ---- no host callbacks anywhere in the package ----

def _code_names(path):
  """The identifiers of a Python file, comments and string literals (docs) excluded."""
  with open(path, 'rb') as f:
    return {tok.string for tok in tokenize.tokenize(f.readline) if tok.type == tokenize.NAME}


def test_no_python_callbacks_in_package():
  # Everything that runs in the model, the training step, evaluation or the export.
  # The input pipeline (faster_rcnn_tf/data/) is the one exception: it reads image files
  # and XML with Python on the host inside tf.data, never inside the step or the export
  # (the SavedModel's graph is scanned in test_export.py, the step's graph below).
  files = glob.glob(os.path.join(ROOT, 'faster_rcnn_tf', '**', '*.py'), recursive=True)
  files = [f for f in files
           if os.sep + os.path.join('faster_rcnn_tf', 'data') + os.sep not in f]
  scripts = [os.path.join(ROOT, f) for f in ('train.py', 'evaluate.py', 'export.py',
                                              'predict.py')]
  missing = [s for s in scripts if not os.path.isfile(s)]
  assert not missing, f'scripts to scan are missing: {missing}'  # required, never skipped
  files += scripts
  assert len(files) > 10
  banned = {'py_function', 'numpy_function', 'py_func'}
  offenders = {os.path.relpath(f, ROOT): sorted(_code_names(f) & banned) for f in files}
  offenders = {f: names for f, names in offenders.items() if names}
  assert not offenders, offenders


def test_callback_scan_detects_uses_but_not_docs(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('import tensorflow as tf\nx = tf.numpy_function(f, [a], tf.float32)\n')
  doc = tmp_path / 'doc.py'
  doc.write_text('"""Plain TensorFlow (no py_function)."""\n# never tf.py_func\nx = 1\n')
  assert _code_names(str(bad)) & {'numpy_function'}
  assert not _code_names(str(doc)) & {'py_function', 'py_func', 'numpy_function'}


def test_training_step_graph_has_no_python_ops():
  model = _model()
  opt = keras.optimizers.SGD(0.01, momentum=0.9)
  batch, _, _ = _scene_batch()

  @tf.function
  def step(batch):
    with tf.GradientTape() as tape:
      losses = model.compute_losses(batch, seed=tf.constant([1, 2]))
    grads = tape.gradient(losses['total_loss'], model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return losses

  ops = step_helpers.graph_op_types(step.get_concrete_function(batch))
  assert 'NonMaxSuppressionV4' in ops and 'MatMul' in ops  # the scan sees nested functions
  assert not ops & {'PyFunc', 'EagerPyFunc', 'PyFuncStateless', 'NumpyFunction'}, ops
