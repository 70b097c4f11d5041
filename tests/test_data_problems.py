"""The problems counter: counts, examples, dedupe, logging."""

import logging

from faster_rcnn_tf.data.problems import Problems


def test_counts_examples_and_dedupe(caplog):
  p = Problems('voc:x', max_examples=2, max_logged=3)
  with caplog.at_level(logging.WARNING):
    for i in range(5):
      p.report('zero_area_box', f'f{i}.xml', 'box 0')
    p.report('zero_area_box', 'f0.xml', 'box 0')   # same problem again (next epoch)
    p.report('zero_area_box', 'f0.xml', 'box 1')   # another box in the same file
    p.report('missing_image', 'g.jpg')
  assert p.summary() == {
      'missing_image': {'count': 1, 'examples': ['g.jpg']},
      'zero_area_box': {'count': 6, 'examples': ['f0.xml', 'f1.xml']},
  }
  assert p.count('zero_area_box') == 6 and 'missing_image' in p and 'other' not in p
  zero = [m for m in caplog.messages if 'zero_area_box' in m]
  # 3 logged with file and kind, then one line saying the rest are only counted
  assert zero[0] == '[voc:x] f0.xml: zero_area_box (box 0)'
  assert len(zero) == 4 and 'counted' in zero[3]
  assert any(m == '[voc:x] g.jpg: missing_image' for m in caplog.messages)
