"""The run configuration: flags <-> fields, JSON round trip, older run folders, defaults."""

import dataclasses
import inspect
import json

import pytest

from faster_rcnn_tf import config as config_lib
from faster_rcnn_tf import config_flags
from faster_rcnn_tf import runs

# Flags that set no RunConfig field: --mixed_precision is folded into execution.precision.
NOT_FIELDS = {'mixed_precision'}


def _all_flags():
  return config_flags.new_flag_values()


def _field_names():
  return {f.name: section for section, cls in config_lib.SECTIONS
          for f in dataclasses.fields(cls)}


def test_every_configuration_flag_is_a_field_with_the_same_default():
  flag_values = _all_flags()
  fields = _field_names()
  defaults = config_lib.RunConfig()
  names = {f.name for f in flag_values.get_flags_for_module(config_flags.__name__)}
  assert {'backbone', 'min_size', 'num_steps', 'precision', 'inference_splits'} <= names
  assert names - NOT_FIELDS <= set(fields), sorted(names - NOT_FIELDS - set(fields))
  for name in names - NOT_FIELDS:
    flag_default = flag_values[name].default
    field_default = getattr(getattr(defaults, fields[name]), name)
    if isinstance(field_default, tuple):
      kind = type(field_default[0]) if field_default else str
      flag_default = tuple(kind(v) for v in flag_default)
    assert field_default == flag_default, name


def test_from_flags_reads_every_section_and_the_precision_shorthand():
  flag_values = _all_flags()
  flag_values(['train.py', '--backbone=tiny', '--anchor_scales=1,2', '--min_size=64',
               '--lr_decay_steps=10,20', '--num_steps=7', '--inference_splits=2',
               '--mixed_precision', '--classes=a,b', '--noflip'])
  config = config_lib.RunConfig.from_flags(flag_values)
  assert config.model.backbone == 'tiny' and config.model.anchor_scales == (1.0, 2.0)
  assert config.data.min_size == 64 and config.data.classes == ('a', 'b')
  assert config.data.flip is False
  assert config.train.lr_decay_steps == (10, 20) and config.train.num_steps == 7
  assert config.execution.inference_splits == '2'
  assert config.execution.precision == 'mixed_float16'


def test_with_a_base_only_the_flags_given_override_it():
  base = config_lib.RunConfig(class_names=('x',))
  base.model.backbone, base.model.score_threshold, base.data.min_size = 'tiny', 0.2, 64
  flag_values = _all_flags()
  flag_values(['export.py', '--score_threshold=0.5'])
  config = config_lib.RunConfig.from_flags(flag_values, base=base)
  assert (config.model.backbone, config.model.score_threshold, config.data.min_size) == (
      'tiny', 0.5, 64)
  assert config.class_names == ('x',)
  assert base.model.score_threshold == 0.2     # the base is not changed


def test_bad_values_name_the_flag():
  flag_values = _all_flags()
  flag_values(['train.py', '--anchor_scales=1,big'])
  with pytest.raises(config_lib.ConfigError, match='--anchor_scales must be floats'):
    config_lib.RunConfig.from_flags(flag_values)
  flag_values = _all_flags()
  flag_values(['train.py', '--lr_decay_steps=1.5'])
  with pytest.raises(config_lib.ConfigError, match='--lr_decay_steps must be ints'):
    config_lib.RunConfig.from_flags(flag_values)


def test_json_round_trip_and_its_checks():
  config = config_lib.RunConfig(class_names=('cat', 'dog'))
  config.model.anchor_scales = (2.0, 4.0)
  config.train.lr_decay_steps = (5,)
  config.data.classes = ('cat', 'dog')
  text = config.to_json()
  assert json.loads(text)['model']['anchor_scales'] == [2.0, 4.0]
  assert config_lib.RunConfig.from_json(text) == config
  data = json.loads(text)
  del data['model']['rpn_channels']              # an older file: the default is used
  assert config_lib.RunConfig.from_dict(data).model.rpn_channels == 512
  data['model']['rpn_width'] = 3
  with pytest.raises(config_lib.ConfigError, match='unknown field "model.rpn_width"'):
    config_lib.RunConfig.from_dict(data, where='x.json')
  with pytest.raises(config_lib.ConfigError, match='newer than this software'):
    config_lib.RunConfig.from_dict({'format_version': config_lib.FORMAT_VERSION + 1})
  with pytest.raises(config_lib.ConfigError, match='x.json: not valid JSON'):
    config_lib.RunConfig.from_json('{', where='x.json')


def test_one_default_for_the_background_iou_floor():
  from faster_rcnn_tf.layers.proposal_targets import ProposalTargets
  from faster_rcnn_tf.model import FasterRCNN
  layer_default = inspect.signature(ProposalTargets).parameters['bg_iou_lo'].default
  model_default = inspect.signature(FasterRCNN).parameters['roi_bg_iou_lo'].default
  flag_default = _all_flags()['roi_bg_iou_lo'].default
  # The reference's VGG16 configuration: background RoIs from IoU [0.0, 0.5).
  assert layer_default == model_default == flag_default == 0.0


def test_one_default_for_the_detection_nms_iou():
  from faster_rcnn_tf.layers.detection_generator import DetectionGenerator
  from faster_rcnn_tf.model import FasterRCNN
  layer_default = inspect.signature(DetectionGenerator).parameters['nms_iou'].default
  model_default = inspect.signature(FasterRCNN).parameters['detection_nms_iou'].default
  config = config_lib.RunConfig(class_names=('a',))
  # The reference's TEST.NMS.
  assert (layer_default == model_default == _all_flags()['detection_nms_iou'].default
          == config_lib.model_kwargs(config)['detection_nms_iou'] == 0.3)
  config.model.detection_nms_iou = 0.5
  assert config_lib.model_kwargs(config)['detection_nms_iou'] == 0.5


def test_model_kwargs_are_the_model_constructor_keywords():
  from faster_rcnn_tf.model import FasterRCNN
  config = config_lib.RunConfig(class_names=('a',))
  kwargs = config_lib.model_kwargs(config)
  params = inspect.signature(FasterRCNN).parameters
  assert set(kwargs) <= set(params)
  assert kwargs['num_classes'] == 1 and kwargs['backbone_weights'] is None
  assert config_lib.model_kwargs(config, serving=True)['compile_backbone'] is False
  with pytest.raises(config_lib.ConfigError, match='no class names'):
    config_lib.model_kwargs(config_lib.RunConfig())


def test_an_older_run_folder_reads_through_the_flag_definitions(tmp_path):
  (tmp_path / 'flags.cfg').write_text(
      '--backbone=tiny\n--anchor_scales=1,2,4\n--min_size=64\n--noflip\n--num_steps=6\n'
      '--verbosity=0\n--alsologtostderr\n--xla_gpu_whatever=1\n')
  (tmp_path / 'classes.json').write_text(json.dumps({'class_names': ['a', 'b']}))
  config = runs.read_run_config(str(tmp_path))
  assert config.model.backbone == 'tiny' and config.model.anchor_scales == (1.0, 2.0, 4.0)
  assert config.data.min_size == 64 and config.data.flip is False
  assert config.train.num_steps == 6 and config.class_names == ('a', 'b')
  # Converting it: the same configuration from run_config.json.
  runs.write_run_config(str(tmp_path), config)
  (tmp_path / 'flags.cfg').unlink()
  assert runs.read_run_config(str(tmp_path)) == config


def test_unreadable_run_folders_are_one_line_naming_the_file(tmp_path):
  with pytest.raises(runs.RunError, match='no such folder'):
    runs.read_run_config(str(tmp_path / 'nope'))
  with pytest.raises(runs.RunError, match='no run_config.json'):
    runs.read_run_config(str(tmp_path))
  (tmp_path / 'flags.cfg').write_text('--backbone=tiny\n')
  with pytest.raises(runs.RunError, match='no run_config.json and no classes.json'):
    runs.read_run_config(str(tmp_path))
  (tmp_path / 'flags.cfg').write_text('--backbone=resnet9000\n')
  (tmp_path / 'classes.json').write_text('{"class_names": ["a"]}')
  with pytest.raises(runs.RunError, match='flags.cfg: .*resnet9000'):
    runs.read_run_config(str(tmp_path))
  (tmp_path / 'run_config.json').write_text('{"model": {"backbone": "tiny"}}')
  with pytest.raises(runs.RunError, match='"class_names" is empty'):
    runs.read_run_config(str(tmp_path))


def test_multi_scale_augmentation_and_auto_anchors_round_trip():
  flag_values = _all_flags()
  flag_values(['train.py', '--min_size=480,512,800', '--brightness=0.125', '--hue=0.05',
               '--scale_jitter=0.5,2', '--anchor_scales=auto:4', '--anchor_ratios=0.5,2'])
  config = config_lib.RunConfig.from_flags(flag_values).replace(class_names=('a',))
  d, m = config.data, config.model
  assert d.min_size == (480, 512, 800) and d.train_min_sizes == (480, 512, 800)
  assert d.inference_min_size == 800                 # the largest training size
  assert (d.brightness, d.hue, d.scale_jitter) == (0.125, 0.05, (0.5, 2.0))
  assert m.anchor_scales == ('auto:4',) and m.anchor_ratios == (0.5, 2.0)
  assert m.auto_anchors
  assert config_lib.RunConfig.from_json(config.to_json()) == config
  assert config_lib.pipeline_kwargs(d)['min_size'] == (480, 512, 800)
  assert config_lib.pipeline_kwargs(d)['scale_jitter'] == (0.5, 2.0)
  with pytest.raises(config_lib.ConfigError, match='resolved by train.py'):
    config_lib.model_kwargs(config)
  # One size stays an int; --test_min_size picks the inference size.
  flag_values = _all_flags()
  flag_values(['train.py', '--min_size=64', '--test_min_size=72'])
  d = config_lib.RunConfig.from_flags(flag_values).data
  assert (d.min_size, d.train_min_sizes, d.inference_min_size) == (64, (64,), 72)
  assert config_lib.pipeline_kwargs(d)['scale_jitter'] is None


@pytest.mark.parametrize('section,values,expected', [
    ('data', {'min_size': [64, 0]}, '--min_size'),
    ('data', {'min_size': 'big'}, '--min_size'),
    ('data', {'scale_jitter': [2.0, 1.0]}, '--scale_jitter'),
    ('data', {'scale_jitter': [0.5]}, '--scale_jitter'),
    ('data', {'hue': 0.9}, '--hue must be in'),
    ('data', {'test_min_size': -1}, '--test_min_size'),
    ('model', {'anchor_scales': ['auto:x']}, '--anchor_scales'),
])
def test_bad_data_and_anchor_fields_in_a_file_name_the_field(section, values, expected):
  with pytest.raises(config_lib.ConfigError, match=expected):
    config_lib.RunConfig.from_dict({section: values}, where='x.json')
