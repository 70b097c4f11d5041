"""torchvision's Faster R-CNN on this machine: the yardstick for speed, measured in
the same way as bench_inference / bench_train_step (needs torch and torchvision, which
requirements files do not install: `pip install torch torchvision`).

    python bench/bench_torchvision.py [--models=vgg16,mobilenet_v3_fpn]
        [--sizes=600x800] [--batches=1,8] [--train_batches=1,4]
        [--modes=inference,train_step] [--amp=off|on|both] [--device=auto|cpu|cuda]
        [--repeats=5] [--warmup=2] [--threads=2]

Models (random weights, 21 classes: VOC's 20 and background):
  vgg16             the classic design at torchvision's API: VGG16 conv5_3 features
                    (stride 16, no pool5), one level of 9 anchors (128/256/512 px, ratios
                    0.5/1/2), RPN 6000 -> 300 test proposals (12000 -> 2000 in
                    training), 7x7 RoIAlign, fc6 / fc7 of 4096, 128 RoIs per image in
                    training; conv1 and conv2 frozen, as our model's default.
  mobilenet_v3_fpn  torchvision's fasterrcnn_mobilenet_v3_large_fpn (its defaults)
                    with min_size 600.
Both resize with min_size 600 / max_size 1000, so a 600x800 input stays 600x800
(padded to 608x800, a multiple of 32, by torchvision's transform).

--amp: torch.autocast float16 (inference) and a GradScaler (training): the counterpart of
our --mixed_precision. float32 runs keep torch's defaults (TF32 convolutions on NVIDIA
GPUs since cuDNN allows them, float32 matmuls unless --tf32_matmul=1); the first line
says which.

Prints one JSON line per measurement, after a first line with the matmul GFLOP/s of this
run (float32 and, on a GPU, float16): {"bench": "torchvision", "model", "mode"
(inference / train_step), "amp", "height", "width", "batch", "device",
"sec_per_image_median", "sec_per_image_min", "sec_per_image_max", "images_per_s",
"matmul_gflops", ...}. bench/compare_torchvision.py joins these lines with ours.
"""

import argparse
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from bench import common  # pylint: disable=wrong-import-position

MODELS = ('vgg16', 'mobilenet_v3_fpn')
NUM_CLASSES = 21  # VOC's 20 and background


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--sizes', default='600x800', help='HxW list.')
  parser.add_argument('--batches', default='1,8', help='Inference batch sizes.')
  parser.add_argument('--train_batches', default='1,4', help='Training batch sizes.')
  parser.add_argument('--modes', default='inference,train_step')
  parser.add_argument('--amp', default='off', choices=('off', 'on', 'both'))
  parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
  parser.add_argument('--tf32_matmul', type=int, default=0, choices=(0, 1),
                      help='torch.backends.cuda.matmul.allow_tf32 (torch default 0).')
  parser.add_argument('--threads', type=int, default=common.DEFAULT_THREADS,
                      help='CPU threads (torch.set_num_threads, OpenMP).')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--matmul_size', type=int, default=4096)
  parser.add_argument('--num_boxes', type=int, default=5, help='Ground-truth boxes per image.')
  parser.add_argument('--seed', type=int, default=0)
  return parser


def build_model(name):
  """A torchvision FasterRCNN (random weights) as described in the module docstring."""
  import torchvision
  from torchvision.models.detection import FasterRCNN
  from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
  from torchvision.models.detection.rpn import AnchorGenerator
  from torchvision.ops import MultiScaleRoIAlign
  if name == 'vgg16':
    features = torchvision.models.vgg16(weights=None).features[:30]  # to conv5_3 + ReLU
    for layer in features[:10]:  # conv1_1 .. pool2: frozen
      for p in layer.parameters():
        p.requires_grad_(False)
    features.out_channels = 512
    return FasterRCNN(
        features, num_classes=None, min_size=600, max_size=1000,
        rpn_anchor_generator=AnchorGenerator(((128, 256, 512),), ((0.5, 1.0, 2.0),)),
        rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=300,
        box_roi_pool=MultiScaleRoIAlign(['0'], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(512 * 7 * 7, 4096),
        box_predictor=FastRCNNPredictor(4096, NUM_CLASSES),
        box_batch_size_per_image=128, box_detections_per_img=100)
  if name == 'mobilenet_v3_fpn':
    return torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, min_size=600,
        max_size=1000)
  raise ValueError(f'--models: unknown model {name!r}; choose from {MODELS}')


def measure_matmul(torch, device, n, dtype):
  """Best GFLOP/s of an n x n matmul of `dtype` on `device` (3 timed runs)."""
  a = torch.randn(n, n, device=device, dtype=dtype)
  b = torch.randn(n, n, device=device, dtype=dtype)

  def product():
    c = a @ b
    if device.type == 'cuda':
      torch.cuda.synchronize()
    return c
  _, times = common.time_fn(product, 2, 5)
  return 2.0 * n ** 3 / min(times) / 1e9


def random_inputs(torch, device, batch, height, width, num_boxes, seed):
  """Images: a list of float [3, H, W] in [0, 1]; targets: random boxes and labels."""
  gen = torch.Generator().manual_seed(seed)
  images = [torch.rand(3, height, width, generator=gen).to(device) for _ in range(batch)]
  targets = []
  for _ in range(batch):
    y1 = torch.rand(num_boxes, generator=gen) * (height - 100)
    x1 = torch.rand(num_boxes, generator=gen) * (width - 100)
    h = 32 + torch.rand(num_boxes, generator=gen) * 64
    w = 32 + torch.rand(num_boxes, generator=gen) * 64
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], dim=1)  # torchvision: x1, y1, x2, y2
    labels = torch.randint(1, NUM_CLASSES, (num_boxes,), generator=gen)
    targets.append({'boxes': boxes.to(device), 'labels': labels.to(device)})
  return images, targets


def make_inference(torch, model, device, images, amp):
  def infer():
    with torch.inference_mode(), torch.autocast(device.type, torch.float16, enabled=amp):
      out = model(images)
    return [{k: v.cpu() for k, v in o.items()} for o in out]  # waits for the device
  return infer


def make_train_step(torch, model, device, images, targets, amp):
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.SGD(params, lr=0.001, momentum=0.9, weight_decay=1e-4)
  scaler = torch.amp.GradScaler(device.type, enabled=amp)

  def step():
    with torch.autocast(device.type, torch.float16, enabled=amp):
      losses = model(images, targets)
      loss = sum(losses.values())
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return float(loss)  # waits for the device
  return step


def run(args):
  try:
    import torch
    import torchvision
  except ImportError as e:
    raise common.BenchError(f'needs torch and torchvision, which the requirements files do '
                            f'not install ({e}): pip install torch torchvision') from None
  torch.set_num_threads(args.threads)
  if args.device == 'auto':
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  else:
    device = torch.device(args.device)
  torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32_matmul)
  torch.manual_seed(args.seed)
  matmul = {'matmul_n': args.matmul_size,
            'matmul_gflops_float32': common._round(  # pylint: disable=protected-access
                measure_matmul(torch, device, args.matmul_size, torch.float32), 4)}
  if device.type == 'cuda':
    matmul['matmul_gflops_float16'] = common._round(  # pylint: disable=protected-access
        measure_matmul(torch, device, args.matmul_size, torch.float16), 4)
  info = {'device': str(device),
          'device_name': (torch.cuda.get_device_name(device) if device.type == 'cuda'
                          else None),
          'torch_version': torch.__version__, 'torchvision_version': torchvision.__version__,
          'threads': args.threads, 'cpu_count': os.cpu_count(),
          'tf32_matmul': torch.backends.cuda.matmul.allow_tf32,
          'tf32_cudnn': torch.backends.cudnn.allow_tf32}
  records = [common.emit({'bench': 'torchvision', 'mode': 'matmul_roofline', **matmul,
                          **info})]
  amp_settings = {'off': [False], 'on': [True], 'both': [False, True]}[args.amp]
  modes = common.parse_list(args.modes)
  for name in common.parse_list(args.models):
    model = build_model(name).to(device)
    for height, width in common.parse_sizes(args.sizes):
      for mode in modes:
        batches = common.parse_ints(args.batches if mode == 'inference'
                                    else args.train_batches)
        for amp in amp_settings:
          for batch in batches:
            images, targets = random_inputs(torch, device, batch, height, width,
                                            args.num_boxes, args.seed)
            if mode == 'inference':
              model.eval()
              fn = make_inference(torch, model, device, images, amp)
            elif mode == 'train_step':
              model.train()
              fn = make_train_step(torch, model, device, images, targets, amp)
            else:
              raise ValueError(f'--modes: unknown mode {mode!r}')
            try:
              warm, times = common.time_fn(fn, args.warmup, args.repeats)
            except Exception as e:  # pylint: disable=broad-except
              records.append(common.emit({
                  'bench': 'torchvision', 'model': name, 'mode': mode, 'amp': amp,
                  'batch': batch, 'error': f'{type(e).__name__}: {str(e)[:500]}'}))
              continue
            fields = common.timing_fields(times, batch, warm)
            rate = matmul['matmul_gflops_float16' if amp and device.type == 'cuda'
                          else 'matmul_gflops_float32']
            records.append(common.emit({
                'bench': 'torchvision', 'model': name, 'mode': mode, 'amp': amp,
                'height': height, 'width': width, 'batch': batch, **fields,
                'matmul_gflops': rate, 'device': str(device),
                'device_name': info['device_name']}))
    del model
  return records


if __name__ == '__main__':
  common.script_main(build_parser, run)
