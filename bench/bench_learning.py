"""How much a from-scratch model learns per image and per second: our config (default
configs/bccd_scratch.cfg) against torchvision's fasterrcnn_mobilenet_v3_large_fpn
(weights=None, weights_backbone=None) trained on the same images, both scored by our
evaluate.py (VOC07 and VOC area mAP@0.5, COCO AP) on the same test images.

    python bench/bench_learning.py --dataset=voc:../shared/data/bccd \\
        [--flagfile=configs/bccd_scratch.cfg] [--steps=600] [--batch_size=0]
        [--arms=ours,tv_steps,tv_time] [--time_limit=S] [--work_dir=/tmp/bench_learning]
        [--threads=2]

Needs torch and torchvision for the torchvision arms (bench/requirements-torchvision.txt;
never a dependency of the package). Run it on a quiet machine: the wall-time arm is only
as fair as the machine is steady.

Arms (all from the same flagfile's data, sizes, optimizer and schedule):
  ours      train.py --flagfile=F --dataset=D --num_steps=STEPS, the warm-up and decay
            steps scaled from the flagfile's --num_steps to STEPS;
  tv_steps  torchvision for the same STEPS and batch size: the same optimizer (Adam or SGD
            with momentum), learning rate, warm-up, step decay and weight decay, the same
            min / max size and horizontal flips, images and boxes from our own data source
            (the same cleaning), difficult objects left out as ours leaves them out;
  tv_time   torchvision for ours' wall time: its schedule stretched over the time left
            after start-up (warm-up and decays at the same fractions of the time), as
            many steps as fit, stopped at the time limit.
Wall time is each training process's, from its start (imports, data, graph building
included) to its last step; evaluation is not counted.

Prints one JSON line per arm:
  {"bench": "learning", "arm", "dataset", "steps", "batch", "wall_seconds",
   "sec_per_step", "map50_voc07", "map50_voc", "coco_ap", "coco_ap50", "work_dir", ...}
and one {"bench": "learning_comparison", ...} line: ours minus torchvision at the same
wall time and at the same steps (the goals: >= 0 and >= -0.02 in VOC07 mAP@0.5).
"""

import argparse
import dataclasses
import json
import os
import pickle
import subprocess
import sys
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # pylint: disable=wrong-import-position

ARMS = ('ours', 'tv_steps', 'tv_time')
TV_MODEL = 'fasterrcnn_mobilenet_v3_large_fpn'
DONE = 'Training done'
WORKER_FLAG = '--torchvision_worker'  # the child process's mode: argv [WORKER_FLAG, SPEC]


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True, help='Dataset spec, e.g. voc:DIR.')
  parser.add_argument('--flagfile', default=os.path.join(common.REPO, 'configs',
                                                         'bccd_scratch.cfg'),
                      help='Our config (train.py flags); its splits, sizes and schedule '
                      'serve every arm.')
  parser.add_argument('--steps', type=int, default=600, help='Training steps of ours and '
                      'of tv_steps.')
  parser.add_argument('--batch_size', type=int, default=0,
                      help='Images per step (0: the flagfile\'s).')
  parser.add_argument('--arms', default=','.join(ARMS),
                      help=f'Comma-separated subset of {",".join(ARMS)}.')
  parser.add_argument('--work_dir', default='/tmp/bench_learning',
                      help='Run folders, data and detections of every arm.')
  parser.add_argument('--extra_flags', default='',
                      help='More train.py flags for ours, space-separated.')
  parser.add_argument('--time_limit', type=float, default=0.0,
                      help='Seconds for tv_time when ours is not among --arms (ours\' '
                      'wall time from an earlier run).')
  parser.add_argument('--threads', type=int, default=common.DEFAULT_THREADS,
                      help='CPU threads of every arm.')
  return parser


# --------------------------------------------------------------------- schedules


def scaled_steps(values, from_steps, to_steps):
  """Schedule step counts (warm-up, decay boundaries) scaled from a run of `from_steps`
  to one of `to_steps`: ints, at least 1 where the value was non-zero."""
  return [max(1, round(v * to_steps / from_steps)) if v else 0 for v in values]


def scaled_schedule(train, steps):
  """(warm-up steps, decay boundaries) of TrainConfig `train` scaled to a run of `steps`."""
  warmup = scaled_steps([train.warmup_steps], train.num_steps, steps)[0]
  return warmup, scaled_steps(list(train.lr_decay_steps), train.num_steps, steps)


def learning_rate(step, base, boundaries, factor, warmup_steps, warmup_factor=0.1):
  """The rate at 0-based `step` of our schedule (`training.optimizer.StepDecayWithWarmup`):
  base * factor ** (boundaries passed), ramped linearly from warmup_factor times that
  over the first `warmup_steps` steps."""
  lr = base * factor ** sum(step >= b for b in boundaries)
  if warmup_steps > 0:
    alpha = min(step / warmup_steps, 1.0)
    lr *= warmup_factor + (1.0 - warmup_factor) * alpha
  return lr


# --------------------------------------------------------------------- data


def export_records(config, path):
  """Writes the training and evaluation splits of `config` (our source, our cleaning) to a
  pickle the torchvision worker reads without TensorFlow: {'class_names', 'category_ids',
  'train': [...], 'test': [...]}, each item {'image' uint8 [H, W, 3], 'boxes' float32
  [N, 4] xyxy pixels, 'labels' int64 [N] 1..K, 'image_id' int}. Difficult objects are
  left out of the training items when the config skips them. Returns (class names,
  training images, test images)."""
  import numpy as np
  from faster_rcnn_tf import config as config_lib
  from faster_rcnn_tf.data import registry
  data = config.data
  train = registry.get_source(data.dataset, data.train_split, classes=data.classes,
                              seed=config.train.seed, **config_lib.source_kwargs(data))
  test = registry.get_source(data.dataset, data.eval_split, classes=train.class_names,
                             seed=config.train.seed, **config_lib.source_kwargs(data))

  def items(source, drop_difficult):
    out = []
    for record in source.records():
      keep = ~record['difficult'] if drop_difficult else np.ones(len(record['classes']), bool)
      ymin, xmin, ymax, xmax = np.asarray(record['boxes'], np.float32)[keep].T
      out.append({'image': record['image'],
                  'boxes': np.stack([xmin, ymin, xmax, ymax], axis=1).reshape(-1, 4),
                  'labels': np.asarray(record['classes'], np.int64)[keep],
                  'image_id': int(record['image_id'])})
    return out

  payload = {'class_names': list(train.class_names),
             'category_ids': [int(c) for c in train.category_ids],
             'train': items(train, data.skip_difficult), 'test': items(test, False)}
  if not payload['train'] or not payload['test']:
    raise common.BenchError(f'{data.dataset}: no images in split '
                            f'{data.train_split if not payload["train"] else data.eval_split}')
  with open(path, 'wb') as f:
    pickle.dump(payload, f)
  return payload['class_names'], len(payload['train']), len(payload['test'])


def coco_results(image_id, boxes_xyxy, scores, labels, category_ids):
  """COCO results entries of one image's detections: bbox [x, y, w, h] in pixels,
  category_id the dataset's id of class label (1..K)."""
  out = []
  for (x0, y0, x1, y1), score, label in zip(boxes_xyxy, scores, labels):
    out.append({'image_id': int(image_id), 'category_id': int(category_ids[int(label) - 1]),
                'bbox': [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                'score': float(score)})
  return out


# --------------------------------------------------------------------- torchvision


def schedule_step(elapsed, budget, steps):
  """The wall-time arm's position in a `steps`-step schedule after `elapsed` of its
  `budget` seconds of training: the schedule stretched over the time, so warm-up and
  decays fall at the same fractions of the time as of the steps (no step count to
  predict: torchvision's first steps are several times slower than the rest)."""
  return min(steps, int(steps * elapsed / budget)) if budget > 0 else steps


def torchvision_worker(spec_path):
  """Trains and runs torchvision's model as the spec file says (a child process: torch
  only, no TensorFlow); writes detections.json and result.json into spec['out_dir']."""
  start = time.time()
  import numpy as np
  import torch
  import torchvision
  with open(spec_path) as f:
    spec = json.load(f)
  torch.set_num_threads(spec['threads'])
  torch.manual_seed(spec['seed'])
  rng = np.random.default_rng(spec['seed'])
  with open(spec['data'], 'rb') as f:
    data = pickle.load(f)
  num_classes = len(data['class_names']) + 1
  model = getattr(torchvision.models.detection, TV_MODEL)(
      weights=None, weights_backbone=None, num_classes=num_classes,
      min_size=tuple(spec['min_size']), max_size=spec['max_size'],
      box_score_thresh=spec['score_threshold'], box_detections_per_img=spec['max_detections'])
  params = [p for p in model.parameters() if p.requires_grad]
  if spec['optimizer'] == 'adam':
    optimizer = torch.optim.Adam(params, lr=spec['lr'], weight_decay=spec['weight_decay'])
  else:
    optimizer = torch.optim.SGD(params, lr=spec['lr'], momentum=spec['momentum'],
                                weight_decay=spec['weight_decay'])

  def tensors(item, flip):
    image = torch.from_numpy(item['image']).permute(2, 0, 1).float() / 255.0
    boxes = torch.from_numpy(item['boxes']).float()
    if flip:
      image = image.flip(-1)
      width = image.shape[-1]
      boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0],
                           boxes[:, 3]], dim=1)
    return image, {'boxes': boxes, 'labels': torch.from_numpy(item['labels'])}

  train, batch = data['train'], spec['batch']
  order, pos = rng.permutation(len(train)), 0
  steps, boundaries, warmup = spec['steps'], list(spec['boundaries']), spec['warmup_steps']
  deadline = start + spec['time_limit'] if spec['time_limit'] else None
  model.train()
  step, train_start, losses = 0, time.time(), []
  while deadline or step < steps:
    now = time.time()
    if deadline and now >= deadline:
      break
    at = schedule_step(now - train_start, deadline - train_start, steps) if deadline else step
    for group in optimizer.param_groups:
      group['lr'] = learning_rate(at, spec['lr'], boundaries, spec['decay_factor'], warmup)
    images, targets = [], []
    for _ in range(batch):
      if pos == len(order):
        order, pos = rng.permutation(len(train)), 0
      image, target = tensors(train[order[pos]], spec['flip'] and rng.random() < 0.5)
      pos += 1
      images.append(image)
      targets.append(target)
    loss_dict = model(images, targets)
    loss = sum(loss_dict.values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(float(loss))
    step += 1
    if step % spec['log_every'] == 0:
      print(f'step {step}/{steps} | loss {np.mean(losses[-spec["log_every"]:]):.4f} | '
            f'{time.time() - start:.0f} s', file=sys.stderr, flush=True)
  wall = time.time() - start
  print(f'{DONE}: step {step}', file=sys.stderr, flush=True)

  model.eval()
  results = []
  with torch.no_grad():
    for item in data['test']:
      image = torch.from_numpy(item['image']).permute(2, 0, 1).float() / 255.0
      out = model([image])[0]
      results += coco_results(item['image_id'], out['boxes'].numpy(), out['scores'].numpy(),
                              out['labels'].numpy(), data['category_ids'])
  with open(os.path.join(spec['out_dir'], 'detections.json'), 'w') as f:
    json.dump(results, f)
  with open(os.path.join(spec['out_dir'], 'result.json'), 'w') as f:
    json.dump({'steps': step, 'wall_seconds': wall,
               'train_seconds': time.time() - train_start,
               'final_loss': float(np.mean(losses[-20:])) if losses else None,
               'torch': torch.__version__, 'torchvision': torchvision.__version__}, f)


# --------------------------------------------------------------------- arms


def _run_logged(cmd, log_path):
  """Runs cmd with its output in log_path; (return code, seconds from start to the line
  starting with DONE, or to the end when none)."""
  start = time.time()
  done_at = None
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=common.REPO)
    for line in proc.stdout:
      log.write(line)
      log.flush()
      if done_at is None and line.startswith(DONE):
        done_at = time.time() - start
      if line.startswith('step '):
        common.note(line.rstrip())
    proc.wait()
  return proc.returncode, done_at if done_at is not None else time.time() - start


def score(dataset, eval_split, out_dir, model_dir=None, detections=None, classes=None):
  """Runs evaluate.py on a run folder or a detections file; metrics.json's values."""
  cmd = [sys.executable, os.path.join(common.REPO, 'evaluate.py'),
         f'--dataset={dataset}', f'--eval_split={eval_split}', '--metric=voc07,voc,coco',
         f'--output_dir={out_dir}', '--num_sample_images=4']
  cmd += [f'--model_dir={model_dir}'] if model_dir else [f'--detections={detections}']
  if classes:
    cmd.append('--classes=' + ','.join(classes))
  result = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO)
  if result.returncode != 0:
    lines = (result.stderr.strip() or result.stdout.strip() or '?').splitlines()
    raise RuntimeError(f'evaluate.py failed ({result.returncode}): {lines[-1]}')
  with open(os.path.join(out_dir, 'metrics.json')) as f:
    return json.load(f)


def metric_fields(metrics):
  """The headline numbers of an evaluate.py metrics.json ('voc07/mAP', 'voc/mAP',
  'coco/AP', 'coco/AP50')."""
  values = metrics['metrics']

  def pick(name):
    return None if values.get(name) is None else round(float(values[name]), 4)

  return {'map50_voc07': pick('voc07/mAP'), 'map50_voc': pick('voc/mAP'),
          'coco_ap': pick('coco/AP'), 'coco_ap50': pick('coco/AP50')}


def run_ours(args, config, steps, batch):
  warmup, decay = scaled_schedule(config.train, steps)
  model_dir = os.path.join(args.work_dir, 'ours')
  cmd = [sys.executable, os.path.join(common.REPO, 'train.py'), f'--flagfile={args.flagfile}',
         f'--dataset={args.dataset}', f'--model_dir={model_dir}', f'--num_steps={steps}',
         f'--batch_size={batch}', f'--warmup_steps={warmup}',
         '--lr_decay_steps=' + ','.join(map(str, decay)), f'--checkpoint_every={steps}',
         '--final_eval=false', '--eval_every=0', *args.extra_flags.split()]
  code, wall = _run_logged(cmd, os.path.join(args.work_dir, 'ours.log'))
  if code != 0:
    raise RuntimeError(f'train.py exited {code}; see {args.work_dir}/ours.log')
  metrics = score(args.dataset, config.data.eval_split, os.path.join(model_dir, 'eval'),
                  model_dir=model_dir)
  return {'steps': steps, 'wall_seconds': round(wall, 1), 'work_dir': model_dir,
          **metric_fields(metrics)}


def run_torchvision(args, config, arm, steps, batch, time_limit, data_path, classes):
  from faster_rcnn_tf import config as config_lib
  t, d, m = config.train, config.data, config.model
  out_dir = os.path.join(args.work_dir, arm)
  os.makedirs(out_dir, exist_ok=True)
  warmup, boundaries = scaled_schedule(t, steps)
  spec = {'data': data_path, 'out_dir': out_dir, 'threads': args.threads, 'seed': t.seed,
          'steps': steps, 'batch': batch, 'time_limit': time_limit,
          'optimizer': t.optimizer, 'lr': t.learning_rate, 'momentum': t.momentum,
          'weight_decay': t.weight_decay, 'decay_factor': t.lr_decay_factor,
          'boundaries': boundaries, 'warmup_steps': warmup,
          'min_size': list(config_lib.min_sizes_of(d.min_size)), 'max_size': d.max_size, 'flip': d.flip,
          'score_threshold': m.score_threshold, 'max_detections': 100,
          'log_every': t.log_every}
  spec_path = os.path.join(out_dir, 'spec.json')
  with open(spec_path, 'w') as f:
    json.dump(spec, f, indent=1)
  cmd = [sys.executable, os.path.abspath(__file__), WORKER_FLAG, spec_path]
  code, _ = _run_logged(cmd, os.path.join(args.work_dir, f'{arm}.log'))
  if code != 0:
    raise RuntimeError(f'torchvision worker exited {code}; see {args.work_dir}/{arm}.log')
  with open(os.path.join(out_dir, 'result.json')) as f:
    result = json.load(f)
  metrics = score(args.dataset, d.eval_split, os.path.join(out_dir, 'eval'),
                  detections=os.path.join(out_dir, 'detections.json'), classes=classes)
  return {'steps': result['steps'], 'wall_seconds': round(result['wall_seconds'], 1),
          'work_dir': out_dir, 'torch': result['torch'],
          'torchvision': result['torchvision'], **metric_fields(metrics)}


def check_torch():
  try:
    import torch  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    import torchvision  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
  except ImportError as e:
    raise common.BenchError(
        f'the torchvision arms need torch and torchvision, which the package does not '
        f'install ({e}): pip install -r bench/requirements-torchvision.txt, or '
        f'--arms=ours') from None


def run(args):
  arms = common.parse_list(args.arms)
  unknown = sorted(set(arms) - set(ARMS))
  if unknown:
    raise ValueError(f'--arms: unknown {unknown}; choose from {",".join(ARMS)}')
  if 'tv_time' in arms and 'ours' not in arms and args.time_limit <= 0:
    raise ValueError('--arms: tv_time needs ours (it trains for ours\' wall time) or '
                     '--time_limit')
  if args.steps < 1:
    raise ValueError(f'--steps={args.steps}: must be at least 1')
  if any(a.startswith('tv_') for a in arms):
    check_torch()
  from faster_rcnn_tf import runs
  try:
    config = runs.config_from_flagfile(args.flagfile)
  except runs.RunError as e:
    raise ValueError(f'--flagfile: {e}') from None
  if 'ours' in arms and os.path.isdir(os.path.join(args.work_dir, 'ours')):
    raise common.BenchError(f'--work_dir: {args.work_dir}/ours exists; give an empty '
                            '--work_dir')
  os.makedirs(args.work_dir, exist_ok=True)
  batch = args.batch_size or config.train.batch_size
  base = {'bench': 'learning', 'dataset': args.dataset, 'flagfile': args.flagfile,
          'extra_flags': args.extra_flags, 'batch': batch, 'threads': args.threads,
          **common.host_fields()}
  records, by_arm = [], {}
  data_path, classes = None, None
  config = config.replace(data=dataclasses.replace(config.data, dataset=args.dataset))
  if any(a.startswith('tv_') for a in arms):
    data_path = os.path.join(args.work_dir, 'data.pkl')
    classes, num_train, num_test = export_records(config, data_path)
    common.note(f'{args.dataset}: {num_train} training and {num_test} test images')
  for arm in arms:
    common.note(f'arm {arm} ...')
    try:
      if arm == 'ours':
        rec = run_ours(args, config, args.steps, batch)
      elif arm == 'tv_steps':
        rec = run_torchvision(args, config, arm, args.steps, batch, 0, data_path, classes)
      else:
        limit = by_arm['ours']['wall_seconds'] if 'ours' in by_arm else args.time_limit
        rec = run_torchvision(args, config, arm, args.steps, batch, limit, data_path,
                              classes)
        rec['time_limit_seconds'] = limit
    except (RuntimeError, OSError) as e:
      rec = {'error': f'{type(e).__name__}: {e}'}
    rec = {**base, 'arm': arm, **rec}
    if 'steps' in rec and rec.get('wall_seconds'):
      rec['sec_per_step'] = round(rec['wall_seconds'] / max(rec['steps'], 1), 3)
      rec['sec_per_image_median'] = round(rec['wall_seconds'] / max(rec['steps'] * batch, 1),
                                          4)
    by_arm[arm] = rec
    records.append(common.emit(rec))
  records.append(common.emit(comparison(args.dataset, by_arm)))
  return records


def comparison(dataset, by_arm):
  """Ours minus torchvision in VOC07 mAP@0.5 at the same wall time and the same steps."""
  ours = by_arm.get('ours', {}).get('map50_voc07')

  def diff(arm):
    theirs = by_arm.get(arm, {}).get('map50_voc07')
    return None if ours is None or theirs is None else round(ours - theirs, 4)

  same_time, same_steps = diff('tv_time'), diff('tv_steps')
  return {'bench': 'learning_comparison', 'dataset': dataset,
          'ours_minus_tv_same_time': same_time, 'ours_minus_tv_same_steps': same_steps,
          'goal_same_time_met': None if same_time is None else same_time >= 0,
          'goal_same_steps_met': None if same_steps is None else same_steps >= -0.02}


if __name__ == '__main__':
  if sys.argv[1:2] == [WORKER_FLAG]:
    torchvision_worker(sys.argv[2])
  else:
    common.script_main(build_parser, run)
