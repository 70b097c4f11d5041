"""Tests of faster_rcnn_tf.ops.xla_context: inside and outside XLA compilation, and the
caller's answer when TensorFlow's private helper is gone."""

import pytest
import tensorflow as tf

from faster_rcnn_tf.ops import xla_context


def _traced(jit):
  seen = []

  def body():
    seen.append(xla_context.in_xla_compilation(if_unknown=None))
    return tf.constant(0)

  tf.function(body, jit_compile=jit)()
  return seen


def test_inside_and_outside_xla_compilation():
  assert _traced(jit=True) == [True]
  assert _traced(jit=False) == [False]
  assert xla_context.in_xla_compilation(if_unknown=None) is False  # eager


@pytest.mark.parametrize('if_unknown', [True, False])
def test_helper_gone_gives_the_callers_choice(monkeypatch, if_unknown):
  from tensorflow.python.ops import control_flow_util
  monkeypatch.delattr(control_flow_util, 'GraphOrParentsInXlaContext')
  assert xla_context.in_xla_compilation(if_unknown=if_unknown) is if_unknown
