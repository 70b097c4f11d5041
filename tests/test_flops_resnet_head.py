"""bench/flops.py's count of the ResNet-50 C4 RoI head against a hand computation: the
conv5 stage on a 14x14x1024 crop, its first block at stride 2, so every conv outputs 7x7."""

from bench import common
from bench import flops


def _conv(out_side, cout, k, cin):
  return 2 * out_side * out_side * cout * k * k * cin


def test_resnet50_c4_head_flops_are_the_7x7_conv5_stage():
  num_classes = 3
  model = common.build_model('resnet50', num_classes=num_classes, test_post_nms_topk=10)
  _, roi_rows, _ = flops.count_layers(model, 64, 96)
  want = 0
  # Block 1: 1x1 stride-2 shortcut 1024 -> 2048, 1x1 stride-2 1024 -> 512, 3x3 512 -> 512,
  # 1x1 512 -> 2048; blocks 2 and 3: 1x1 2048 -> 512, 3x3 512 -> 512, 1x1 512 -> 2048.
  want += _conv(7, 2048, 1, 1024) + _conv(7, 512, 1, 1024)
  want += _conv(7, 512, 3, 512) + _conv(7, 2048, 1, 512)
  want += 2 * (_conv(7, 512, 1, 2048) + _conv(7, 512, 3, 512) + _conv(7, 2048, 1, 512))
  # cls_score and bbox_pred on the pooled 2048 vector.
  want += 2 * 2048 * (num_classes + 1) + 2 * 2048 * 4 * (num_classes + 1)
  assert sum(r.forward for r in roi_rows) == want
  convs = [r for r in roi_rows if r.kind == 'conv']
  assert len(convs) == 10
  assert {r.output_shape[1:3] for r in convs} == {(7, 7)}
  assert convs[0].input_shape[1:3] == (14, 14)
  result = flops.model_flops(model, 64, 96, training=False)
  assert result['parts']['roi_head']['forward'] == want * 10
