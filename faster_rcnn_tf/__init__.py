"""Faster R-CNN in TensorFlow 2 / Keras 3.

The package top is light: `import faster_rcnn_tf` loads no TensorFlow; the names below
import their module on first use.

  faster_rcnn_tf.FasterRCNN   the Keras model (`model.FasterRCNN`)
  faster_rcnn_tf.Execution    its execution options (`execution.Execution`)
  faster_rcnn_tf.Detector     detection on image files, arrays or a folder, in original
                              image pixels with class names (`detector.Detector`)
"""

import importlib

_LAZY = {
    'FasterRCNN': 'faster_rcnn_tf.model',
    'Execution': 'faster_rcnn_tf.execution',
    'Detector': 'faster_rcnn_tf.detector',
}

__all__ = sorted(_LAZY)


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(_LAZY))
