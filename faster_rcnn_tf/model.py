"""The Faster R-CNN model: backbone -> RPN -> proposals -> crop pooling -> per-RoI head.

Shape shorthand: B images, Hp x Wp padded image size, N anchors, P proposals, R sampled
RoIs (training) or P RoIs (inference), K foreground classes, M detections per image.
All boxes are [ymin, xmin, ymax, xmax] pixels of the resized image (`ops.box_ops`).

Two modes, chosen by `call`:
  * training: `model(batch, training=True)` with the batch format of `inputs` (images,
    image_sizes, gt_boxes, gt_classes) returns a dict of named float32 scalar losses:
    rpn_class_loss, rpn_box_loss, head_class_loss, head_box_loss, total_loss.
  * inference: `model(batch)` with at least images and image_sizes returns padded
    detections (see `inputs`: detection_boxes, detection_scores, detection_classes,
    num_detections).
Every stage is plain TensorFlow ops: the whole step compiles with XLA and exports.

Keras' own loop works too (TensorFlow backend): `model.compile(optimizer)`, then
`model.fit(dataset, validation_data=...)` with `data.pipeline.make_dataset` batches:
`train_step` is `training.trainer.TrainingStep`, the step train.py runs; `test_step`
gives validation losses; `predict_step` detections. `model.save('m.keras')` and
`keras.saving.load_model` round-trip (`get_config` holds plain values; the backbone is
rebuilt from its name and Keras restores every weight).
"""

import dataclasses

import keras
import tensorflow as tf

from faster_rcnn_tf import backbones
from faster_rcnn_tf import batch_splitting
from faster_rcnn_tf import config
from faster_rcnn_tf import inputs
from faster_rcnn_tf.execution import Execution
from faster_rcnn_tf.layers.anchor_targets import AnchorTargets
from faster_rcnn_tf.layers.detection_generator import DetectionGenerator
from faster_rcnn_tf.layers.proposal_layer import ProposalLayer
from faster_rcnn_tf.layers.proposal_targets import ProposalTargets
from faster_rcnn_tf.layers.rpn_head import RPNHead
from faster_rcnn_tf.ops import anchors as anchor_ops
from faster_rcnn_tf.ops import hybrid_conv
from faster_rcnn_tf.ops import losses
from faster_rcnn_tf.ops import roi_pooling
# Registers the learning-rate schedule with Keras, for keras.saving.load_model.
from faster_rcnn_tf.training import optimizer as _optimizer  # pylint: disable=unused-import

LOSS_NAMES = ('rpn_class_loss', 'rpn_box_loss', 'head_class_loss', 'head_box_loss',
              'total_loss')


def valid_pixel_mask(image_sizes, height, width):
  """float32 [B, height, width, 1]: 1 inside each image's true size, 0 in the padding."""
  rows = tf.range(height)[tf.newaxis, :, tf.newaxis] < image_sizes[:, 0, tf.newaxis, tf.newaxis]
  cols = tf.range(width)[tf.newaxis, tf.newaxis, :] < image_sizes[:, 1, tf.newaxis, tf.newaxis]
  return tf.cast(rows & cols, tf.float32)[..., tf.newaxis]


@keras.saving.register_keras_serializable(package='faster_rcnn_tf')
class FasterRCNN(keras.Model):
  """Faster R-CNN (Ren et al.) with a configurable backbone.

  Args (all plain values; the CLI reads the config and passes them down):
    num_classes: K, foreground classes (ids 1..K).
    backbone: one of `backbones.NAMES`; backbone_weights: None, 'imagenet' or a file.
    freeze_early_layers: freeze the backbone's first blocks (VGG16 conv1-2, ResNet conv1-2).
    train_batch_norm: train the backbone's batch normalization (batch statistics in
      training) instead of freezing it; see `backbones.build_backbone`.
    anchor_base_size, anchor_scales, anchor_ratios: the anchor set (A = scales x ratios).
    rpn_channels: width of the RPN's 3x3 conv.
    rpn_*: anchor target settings; train/test pre/post NMS top-k, proposal_nms_iou,
      proposal_min_size: proposal layer settings.
    roi_*: proposal target settings (num sampled, fg fraction, fg / bg IoU thresholds).
    rpn_sigma, head_sigma: smooth-L1 sigmas (3 and 1 in the reference).
    score_threshold, detection_nms_iou, max_detections: inference post-processing.
    execution: how the model runs, not what it computes: an `execution.Execution` or a
      dict of its fields (fold_batch_norm, compile_backbone, inference_splits,
      detection_nms_method, proposal_nms_method; see there). None: the defaults.
    fold_batch_norm, compile_backbone, inference_splits, detection_nms_method,
      proposal_nms_method: the same options as keywords (None: `execution`'s value); a
      given one wins.
    class_names: None or the K class names (class id i is class_names[i - 1]);
      min_size, max_size: the resize for detection (shorter side to min_size,
      longer side at most max_size). Not used by the network: kept in get_config so a
      .keras file tells `runs.load_model` / `detector.Detector` how to label and resize.
  """

  def __init__(self, num_classes, backbone='vgg16', backbone_weights=None,
               freeze_early_layers=True, train_batch_norm=False, anchor_base_size=16,
               anchor_scales=(8, 16, 32), anchor_ratios=(0.5, 1.0, 2.0), rpn_channels=512,
               rpn_positive_iou=0.7, rpn_negative_iou=0.3, rpn_num_samples=256,
               rpn_positive_fraction=0.5, train_pre_nms_topk=12000, train_post_nms_topk=2000,
               test_pre_nms_topk=6000, test_post_nms_topk=300, proposal_nms_iou=0.7,
               proposal_min_size=0.0, roi_num_samples=128, roi_fg_fraction=0.25,
               roi_fg_iou=0.5, roi_bg_iou_hi=0.5, roi_bg_iou_lo=config.ROI_BG_IOU_LO,
               rpn_sigma=3.0,
               head_sigma=1.0, score_threshold=0.05, detection_nms_iou=config.DETECTION_NMS_IOU,
               max_detections=100, execution=None, fold_batch_norm=None,
               compile_backbone=None, inference_splits=None, detection_nms_method=None,
               proposal_nms_method=None, class_names=None, min_size=600,
               max_size=1000, **kwargs):
    super().__init__(**kwargs)
    if train_post_nms_topk < roi_num_samples:
      raise ValueError(f'train_post_nms_topk ({train_post_nms_topk}) must be at least '
                       f'roi_num_samples ({roi_num_samples})')
    if class_names is not None and len(class_names) != num_classes:
      raise ValueError(f'{len(class_names)} class_names for num_classes={num_classes}')
    self.class_names = None if class_names is None else [str(c) for c in class_names]
    self.min_size, self.max_size = int(min_size), int(max_size)
    overrides = dict(fold_batch_norm=fold_batch_norm, compile_backbone=compile_backbone,
                     inference_splits=inference_splits,
                     detection_nms_method=detection_nms_method,
                     proposal_nms_method=proposal_nms_method)
    self.execution = dataclasses.replace(
        Execution.of(execution), **{k: v for k, v in overrides.items() if v is not None})
    # What the model computes (get_config's values besides `execution`).
    self.hyperparameters = dict(
        num_classes=num_classes, backbone=backbone, backbone_weights=backbone_weights,
        freeze_early_layers=freeze_early_layers, train_batch_norm=train_batch_norm,
        anchor_base_size=anchor_base_size, anchor_scales=tuple(anchor_scales),
        anchor_ratios=tuple(anchor_ratios), rpn_channels=rpn_channels,
        rpn_positive_iou=rpn_positive_iou, rpn_negative_iou=rpn_negative_iou,
        rpn_num_samples=rpn_num_samples, rpn_positive_fraction=rpn_positive_fraction,
        train_pre_nms_topk=train_pre_nms_topk, train_post_nms_topk=train_post_nms_topk,
        test_pre_nms_topk=test_pre_nms_topk, test_post_nms_topk=test_post_nms_topk,
        proposal_nms_iou=proposal_nms_iou, proposal_min_size=proposal_min_size,
        roi_num_samples=roi_num_samples, roi_fg_fraction=roi_fg_fraction,
        roi_fg_iou=roi_fg_iou, roi_bg_iou_hi=roi_bg_iou_hi, roi_bg_iou_lo=roi_bg_iou_lo,
        rpn_sigma=rpn_sigma, head_sigma=head_sigma, score_threshold=score_threshold,
        detection_nms_iou=detection_nms_iou, max_detections=max_detections)
    execution = self.execution
    batch_splitting.resolve_splits(execution.inference_splits)  # validates
    self.inference_splits = execution.inference_splits
    self.num_classes = num_classes
    self.backbone_name = backbone
    self.rpn_sigma = rpn_sigma
    self.head_sigma = head_sigma
    self.train_batch_norm = bool(train_batch_norm)
    net = backbones.build_backbone(backbone, backbone_weights, self.train_batch_norm,
                                   fold_batch_norm=execution.fold_batch_norm)
    if freeze_early_layers:
      backbones.freeze_layers(net.features, net.frozen_prefixes)
    self.backbone = net.features
    self.compile_backbone = execution.compile_backbone
    self._compiled_backbone = tf.function(
        lambda x, training: self.backbone(x, training=training), jit_compile=True)
    self._hybrid_training = (self.compile_backbone
                             and hybrid_conv.is_plain_convnet(self.backbone))
    self.roi_head = net.roi_head
    self._normalize = net.normalize
    self.stride = net.stride
    self.crop_size = net.crop_size
    self.crop_max_pool = net.crop_max_pool
    self.base_anchors = anchor_ops.generate_base_anchors(anchor_base_size, anchor_ratios,
                                                         anchor_scales)
    num_anchors = len(self.base_anchors)
    self.rpn_head = RPNHead(num_anchors, rpn_channels, name='rpn_head')
    self.proposal_layer = ProposalLayer(train_pre_nms_topk, train_post_nms_topk,
                                        test_pre_nms_topk, test_post_nms_topk,
                                        proposal_nms_iou, proposal_min_size,
                                        nms_method=execution.proposal_nms_method,
                                        name='proposals')
    self.anchor_targets = AnchorTargets(rpn_positive_iou, rpn_negative_iou, rpn_num_samples,
                                        rpn_positive_fraction, name='anchor_targets')
    self.proposal_targets = ProposalTargets(num_classes, roi_num_samples, roi_fg_fraction,
                                            roi_fg_iou, roi_bg_iou_hi, roi_bg_iou_lo,
                                            name='proposal_targets')
    self.cls_score = keras.layers.Dense(
        num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        name='cls_score')
    self.bbox_pred = keras.layers.Dense(
        4 * (num_classes + 1),
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001), name='bbox_pred')
    self.detection_generator = DetectionGenerator(score_threshold, detection_nms_iou,
                                                  max_detections,
                                                  nms_method=execution.detection_nms_method,
                                                  name='detections')
    self._build_weights()
    self.built = True
    self._step_settings = None  # set by compile: Keras' loop
    self._training_step = None
    self._loss_trackers = None

  # ---- serialization ----

  def get_config(self):
    """Plain values: the constructor's arguments, `execution` as a dict."""
    return {'name': self.name, 'trainable': self.trainable, **self.hyperparameters,
            'anchor_scales': list(self.hyperparameters['anchor_scales']),
            'anchor_ratios': list(self.hyperparameters['anchor_ratios']),
            'execution': self.execution.to_dict(), 'class_names': self.class_names,
            'min_size': self.min_size, 'max_size': self.max_size}

  @classmethod
  def from_config(cls, config):
    """The model of `get_config`, without pretrained backbone weights: whoever restores
    the config restores every weight (keras.saving.load_model does)."""
    config = dict(config)
    config['backbone_weights'] = None
    return cls(**config)

  def _build_weights(self):
    feat_ch = self.backbone.output_shape[-1]
    self.rpn_head.build((None, None, None, feat_ch))
    head_dim = self.roi_head.output_shape[-1]
    self.cls_score.build((None, head_dim))
    self.bbox_pred.build((None, head_dim))

  # ---- shared stages ----

  def extract_features(self, images, image_sizes, training=False):
    """images float32 [B, Hp, Wp, 3] in [0, 255] -> features [B, Hf, Wf, C].

    training: a gradient will be taken (selects the hybrid kernels under
    compile_backbone); batch normalization uses batch statistics only if it is trained
    (train_batch_norm), fixed ones otherwise.
    """
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    mask = valid_pixel_mask(tf.cast(image_sizes, tf.int32), shape[1], shape[2])
    normalized = self._normalize(images) * mask
    bn_training = bool(training and self.train_batch_norm)
    if self.compile_backbone:
      if training and self._hybrid_training:
        return hybrid_conv.apply_plain_convnet(self.backbone, normalized)
      return self._compiled_backbone(normalized, bn_training)
    return self.backbone(normalized, training=bn_training)

  def anchors_for(self, features):
    """float32 [N, 4] anchors of a feature map."""
    shape = tf.shape(features)
    fh = features.shape[1] if features.shape[1] is not None else shape[1]
    fw = features.shape[2] if features.shape[2] is not None else shape[2]
    return anchor_ops.tile_anchors(self.base_anchors, fh, fw, self.stride)

  def rpn(self, features, image_sizes, training):
    logits, deltas = self.rpn_head(features)
    anchors = self.anchors_for(features)
    fg_prob = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)[..., 1]
    rois, roi_scores, roi_valid = self.proposal_layer(fg_prob, deltas, anchors, image_sizes,
                                                      training=training)
    return logits, deltas, anchors, rois, roi_valid

  def head(self, features, rois, training):
    """Per-RoI head: rois [B, R, 4] -> class logits [B, R, K + 1], deltas [B, R, 4(K+1)]."""
    num_images, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    crops = roi_pooling.crop_pool(features, rois, self.stride, self.crop_size,
                                  self.crop_max_pool)
    x = self.roi_head(crops, training=training)
    logits = tf.reshape(self.cls_score(x), [num_images, num_rois, self.num_classes + 1])
    deltas = tf.reshape(self.bbox_pred(x), [num_images, num_rois, 4 * (self.num_classes + 1)])
    return logits, deltas

  # ---- the two modes ----

  def compute_losses(self, batch, seed=None, image_offset=0, training=True):
    """Training forward pass: batch dict -> dict of float32 scalar losses.

    seed: optional int32 [2]; with it the anchor and RoI sampling is stateless
    (reproducible), otherwise it uses TF's global random state.
    image_offset: global index of this batch's first image when a global batch is split
    across replicas (so that sampling matches a single-device run of the whole batch).
    training: the layers run in training mode (dropout; trained batch norm uses and
    updates batch statistics). False: the validation losses: proposals, anchor and RoI
    sampling as in training, the layers in inference mode (nothing updated).
    """
    image_sizes = tf.cast(batch[inputs.IMAGE_SIZES], tf.int32)
    gt_boxes = tf.cast(batch[inputs.GT_BOXES], tf.float32)
    gt_classes = tf.cast(batch[inputs.GT_CLASSES], tf.int32)
    features = self.extract_features(batch[inputs.IMAGES], image_sizes, training=training)
    logits, deltas, anchors, rois, roi_valid = self.rpn(features, image_sizes, training=True)
    seed_rpn = seed_roi = None
    if seed is not None:
      seed = tf.cast(seed, tf.int32)
      seed_rpn, seed_roi = seed, seed + tf.constant([0, 7919], tf.int32)
    rpn_t = self.anchor_targets(anchors, image_sizes, gt_boxes, gt_classes, seed=seed_rpn,
                                 image_offset=image_offset)
    rpn_sampled = tf.cast(rpn_t['labels'] >= 0, tf.float32)
    rpn_class_loss = losses.sampled_softmax_loss(logits, rpn_t['labels'], rpn_sampled)
    rpn_box_loss = losses.sampled_box_loss(deltas, rpn_t['box_targets'], rpn_t['box_weights'],
                                           tf.reduce_sum(rpn_sampled), self.rpn_sigma)
    roi_t = self.proposal_targets(rois, roi_valid, gt_boxes, gt_classes, seed=seed_roi,
                                         image_offset=image_offset)
    cls_logits, box_deltas = self.head(features, roi_t['rois'], training=training)
    head_class_loss = losses.sampled_softmax_loss(cls_logits, roi_t['labels'],
                                                  roi_t['weights'])
    head_box_loss = losses.sampled_box_loss(box_deltas, roi_t['box_targets'],
                                            roi_t['box_weights'],
                                            tf.reduce_sum(roi_t['weights']), self.head_sigma)
    total = rpn_class_loss + rpn_box_loss + head_class_loss + head_box_loss
    return dict(zip(LOSS_NAMES, (rpn_class_loss, rpn_box_loss, head_class_loss,
                                 head_box_loss, total)))

  def detect(self, images, image_sizes):
    """Inference: images [B, Hp, Wp, 3] (0..255), image_sizes [B, 2] -> detections dict.

    The batch runs as `inference_splits` sub-batches at once (see `batch_splitting`).
    """
    return batch_splitting.map_sub_batches(
        self._detect_batch, (images, tf.cast(image_sizes, tf.int32)),
        batch_splitting.resolve_splits(self.inference_splits))

  def _detect_batch(self, images, image_sizes):
    """`detect` of one (sub-)batch."""
    features = self.extract_features(images, image_sizes)
    _, _, _, rois, roi_valid = self.rpn(features, image_sizes, training=False)
    cls_logits, box_deltas = self.head(features, rois, training=False)
    probs = tf.nn.softmax(tf.cast(cls_logits, tf.float32), axis=-1)
    return self.detection_generator(rois, roi_valid, probs, box_deltas, image_sizes)

  def call(self, batch, training=False):
    if training:
      return self.compute_losses(batch)
    return self.detect(batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES])

  # ---- Keras' loop: compile / fit / evaluate / predict ----

  def compile(self, optimizer='sgd', seed=0, weight_decay=1e-4, bias_lr_multiplier=1.0,
              jit_compile=False, **kwargs):
    """keras.Model.compile for `fit` / `evaluate` / `predict` (TensorFlow backend).

    The model computes its own losses: no `loss` or `metrics`. The training step is
    `training.trainer.TrainingStep`, train.py's (build the optimizer with
    `training.optimizer.build_optimizer` for the reference schedule and clipping).

    Args:
      optimizer: a keras optimizer (or its name).
      seed: the run's seed: training samples anchors and RoIs with keys derived from it
        and the optimizer's iteration count (a resumed run samples as the original).
      weight_decay, bias_lr_multiplier: see `training.optimizer.apply_reference_rules`
        (train.py: 1e-4, and 2.0 with --double_bias_lr).
      jit_compile: XLA-compile Keras' whole step. False by default: XLA lowers the
        proposal NMS to a slow loop on GPUs (the update is XLA-compiled either way).
      **kwargs: the rest of keras.Model.compile's arguments (steps_per_execution,
        run_eagerly, ...).
    History keys (fit / evaluate): `LOSS_NAMES` and 'loss' (= total_loss, the Keras
    callbacks' default monitor), means over the epoch; fit adds their `val_` twins.
    Callbacks monitoring a named loss need mode='min' (Keras infers it for 'loss' and
    'val_loss' only).
    Under a tf.distribute strategy (model built and compiled in its scope) Keras first
    averages one batch over the replicas, which TensorFlow cannot do for the batch's
    bool gt_difficult field: give fit / evaluate batches without it, e.g.
    `dataset.map(lambda b: {k: v for k, v in b.items() if k != 'gt_difficult'})`.
    """
    for name in ('loss', 'metrics', 'loss_weights', 'weighted_metrics'):
      if kwargs.get(name) is not None:
        raise ValueError(f'FasterRCNN.compile: {name} is not used (the model computes its '
                         f'own losses: {", ".join(LOSS_NAMES)})')
      kwargs.pop(name, None)
    super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
    self._step_settings = dict(seed=int(seed), weight_decay=float(weight_decay),
                               bias_lr_multiplier=float(bias_lr_multiplier))
    self._training_step = None  # made at the first train_step (the optimizer is final)
    if self._loss_trackers is None:
      self._loss_trackers = [keras.metrics.Mean(name=n) for n in LOSS_NAMES]

  def get_compile_config(self):
    config = super().get_compile_config()
    if config is not None and self._step_settings is not None:
      config = {**config, **self._step_settings}
    return config

  def compile_from_config(self, config):
    """Compiles from `get_compile_config` (keras.saving.load_model calls it)."""
    config = keras.saving.deserialize_keras_object(config)
    self.compile(**config)
    if getattr(self, 'optimizer', None) is not None and self.built:
      self.optimizer.build(self.trainable_variables)

  @property
  def metrics(self):
    if not self.compiled or self._loss_trackers is None:
      return super().metrics
    return [self._loss_tracker, *self._loss_trackers]

  def _record_losses(self, step_losses):
    self._loss_tracker.update_state(step_losses['total_loss'])
    for tracker in self._loss_trackers:
      tracker.update_state(step_losses[tracker.name])
    return {m.name: m.result() for m in self.metrics}

  @staticmethod
  def _batch_of(data):
    """The `inputs` batch dict of a Keras data element (a dict, or (dict, ...))."""
    return data[0] if isinstance(data, (tuple, list)) else data

  def train_step(self, data):
    """One `training.trainer.TrainingStep` (train.py's step) on this replica's batch."""
    if self._training_step is None:
      from faster_rcnn_tf.training import trainer  # pylint: disable=import-outside-toplevel
      self._training_step = trainer.TrainingStep(self, self.optimizer,
                                                 self.distribute_strategy,
                                                 **self._step_settings)
    return self._record_losses(self._training_step(self._batch_of(data)))

  def test_step(self, data):
    """Validation losses of a batch with ground truth: `compute_losses(training=False)`
    (training-mode proposals and sampling, inference-mode layers, nothing updated), with
    a fixed sampling seed so that every evaluation of a dataset samples alike."""
    seed = tf.constant([self._step_settings['seed'], -1], tf.int32)
    return self._record_losses(self.compute_losses(self._batch_of(data), seed=seed,
                                                   training=False))

  def predict_step(self, data):
    """Detections (`detect`) of a batch dict holding at least images and image_sizes."""
    batch = self._batch_of(data)
    return self.detect(batch[inputs.IMAGES], batch[inputs.IMAGE_SIZES])
