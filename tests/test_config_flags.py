"""config_flags' precision rules (the flag parsing itself is covered by test_configs and
the scripts' own tests)."""

import keras
import pytest

from faster_rcnn_tf import config_flags


class _Flags:
  """The bits of absl's FlagValues that resolve_precision reads."""

  def __init__(self, **values):
    self.__dict__.update(values)

  def __contains__(self, name):
    return name in self.__dict__


@pytest.mark.parametrize('values,expected', [
    (dict(precision='float32'), 'float32'),
    (dict(precision='mixed_bfloat16'), 'mixed_bfloat16'),
    (dict(precision='float32', mixed_precision=False), 'float32'),
    (dict(precision='float32', mixed_precision=True), 'mixed_float16'),
    (dict(precision='mixed_float16', mixed_precision=True), 'mixed_float16'),
])
def test_precision_and_its_shorthand(values, expected):
  assert config_flags.resolve_precision(_Flags(**values)) == expected


def test_contradicting_precision_flags_are_refused():
  with pytest.raises(ValueError, match='--precision=mixed_bfloat16'):
    config_flags.resolve_precision(_Flags(precision='mixed_bfloat16', mixed_precision=True))


def test_apply_precision_sets_the_keras_policy():
  try:
    assert config_flags.apply_precision(_Flags(precision='mixed_bfloat16')) == 'mixed_bfloat16'
    assert keras.mixed_precision.global_policy().compute_dtype == 'bfloat16'
    assert keras.mixed_precision.global_policy().variable_dtype == 'float32'
  finally:
    keras.mixed_precision.set_global_policy('float32')


@pytest.mark.parametrize('value,valid', [
    ('auto', True), ('2', True), ('1', True), ('0', False), ('-1', False), ('two', False),
    ('1.5', False)])
def test_inference_splits_validator(value, valid):
  assert config_flags.valid_inference_splits(value) is valid
