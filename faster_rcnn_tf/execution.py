"""How a FasterRCNN runs, apart from what it computes: `Execution`.

These options change speed, never the detections or the losses (beyond float rounding),
so a trained model can be run with any of them.
"""

import dataclasses
from typing import Union


@dataclasses.dataclass(frozen=True)
class Execution:
  """Execution options of `FasterRCNN` (all plain values; JSON-serializable).

  fold_batch_norm: compute each frozen batch norm inside the convolution before it
    (`batch_norm_folding`: one pass fewer over the activations); False for comparisons.
  compile_backbone: run the backbone as an XLA-compiled function even when the rest is
    not compiled (much faster for VGG16 / ResNet convolutions on CPUs; slower for
    MobileNet's depthwise convolutions). In training, a plain conv/max-pool backbone
    (VGG16, tiny) runs through `ops.hybrid_conv` instead: XLA forward and input
    gradients, TensorFlow's faster filter gradients. Exports for TF Serving leave it
    off, since TF Serving runs XLA on CPUs only when told to.
  inference_splits: 'auto' or a positive int: `detect` runs a batch as this many
    independent sub-batches that TensorFlow executes at the same time
    (`batch_splitting`; faster on CPUs, same detections); 'auto' is 2 on CPUs and 1 when
    a GPU or TPU is visible when the model is traced.
  detection_nms_method: how the detection head's per-class NMS runs
    (`layers.detection_generator.DetectionGenerator`'s nms_method): 'batched', 'kernel',
    or 'auto' (batched when a GPU is visible at tracing, TF's kernel otherwise).
  """
  fold_batch_norm: bool = True
  compile_backbone: bool = False
  inference_splits: Union[int, str] = 'auto'
  detection_nms_method: str = 'auto'

  @classmethod
  def of(cls, value):
    """An Execution from None (the defaults), a dict of its fields or an Execution;
    raises ValueError naming an unknown field."""
    if value is None:
      return cls()
    if isinstance(value, cls):
      return value
    if isinstance(value, dict):
      names = {f.name for f in dataclasses.fields(cls)}
      unknown = sorted(set(value) - names)
      if unknown:
        raise ValueError(f'execution: unknown option(s) {unknown}; known: {sorted(names)}')
      return cls(**value)
    raise ValueError(f'execution: expected an Execution or a dict, got {type(value).__name__}')

  def to_dict(self):
    return dataclasses.asdict(self)
