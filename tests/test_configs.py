"""Every shipped config parses with train.py's flags, and the reference recipes say what
DESIGN.md's reference solver says."""

import glob
import os

import pytest
from absl import flags

from tests import run_helpers

CONFIGS = sorted(glob.glob(os.path.join(run_helpers.ROOT, 'configs', '*.cfg')))


@pytest.fixture(scope='module')
def parse():
  import train  # defines the flags  pylint: disable=import-outside-toplevel,unused-import

  def parse_config(path):
    values = flags.FlagValues()
    for name, flag in flags.FLAGS._flags().items():  # pylint: disable=protected-access
      if name not in values:
        values[name] = flag
    values.unparse_flags()
    values(['train.py', f'--flagfile={path}'])
    return values
  return parse_config


def test_configs_exist():
  names = {os.path.basename(p) for p in CONFIGS}
  assert {'shapes_quickstart.cfg', 'vgg16_voc07.cfg', 'res101_voc07.cfg',
          'vgg16_voc0712.cfg', 'res101_coco.cfg', 'bccd_mobilenet.cfg'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_parses(parse, path):
  values = parse(path)
  assert values.model_dir and values.num_steps > 0 and values.batch_size > 0
  assert values.dataset


@pytest.mark.parametrize('name,backbone', [('vgg16_voc07.cfg', 'vgg16'),
                                           ('res101_voc07.cfg', 'resnet101')])
def test_reference_recipe(parse, name, backbone):
  v = parse(os.path.join(run_helpers.ROOT, 'configs', name))
  assert v.backbone == backbone and v.backbone_weights == 'imagenet'
  assert v.num_steps == 70000 and v.lr_decay_steps == ['50000']
  assert v.learning_rate == 0.001 and v.momentum == 0.9 and v.weight_decay == 1e-4
  assert v.optimizer == 'sgd' and v.double_bias_lr and v.flip
  assert (v.min_size, v.max_size) == (600, 1000)
  assert v.dataset == 'tfds:voc/2007' and v.batch_size == 1
