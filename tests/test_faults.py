"""Machine faults and bad input through the scripts, as a user meets them.

Each case runs train.py / evaluate.py / export.py / predict.py as a subprocess and checks
the exit status, one `PROG: error:` line naming the file, folder or flag, no Python
traceback, and that nothing was lost (the earlier checkpoints read back and training
resumes from them). A full disk is a small tmpfs and a read-only folder a read-only bind
mount when the test may mount (root with CAP_SYS_ADMIN); otherwise the fault is injected
(tests/fault_injection.py) or, for a user other than root, made with chmod.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import run_helpers

TINY = f'--flagfile={run_helpers.TINY_CFG}'
TRAIN = (TINY, '--final_eval=false', '--log_every=1')


def _output(result):
  return result.stdout + result.stderr


def _assert_one_error_line(result, prog, *names, status=None):
  """Exactly one 'PROG: error:' line, naming each of `names`; no traceback; returns it."""
  text = _output(result)
  assert 'Traceback' not in text, text[-3000:]
  if status is None:
    assert result.returncode != 0, text[-3000:]
  else:
    assert result.returncode == status, (result.returncode, text[-3000:])
  lines = [line for line in text.splitlines() if line.startswith(f'{prog}: error:')]
  assert len(lines) == 1, text[-3000:]
  for name in names:
    assert str(name) in lines[0], (name, lines[0])
  return lines[0]


def _snapshot(folder):
  """{relative path: sha256} of every file under folder."""
  result = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        result[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return result


def _read_whole(prefix):
  """Every tensor of a checkpoint read with TensorFlow's reader; {name: array}."""
  import tensorflow as tf
  reader = tf.train.load_checkpoint(str(prefix))
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def _step_of(prefix):
  return int(_read_whole(prefix)['optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE'])


def _mount(*args):
  try:
    return subprocess.run(['mount', *map(str, args)], capture_output=True,
                          timeout=30).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return False


def _umount(path):
  subprocess.run(['umount', str(path)], capture_output=True, timeout=30, check=True)


@contextlib.contextmanager
def _mounted(*args):
  """Runs `mount ARGS` (the last one the mount point); yields whether it worked."""
  ok = _mount(*args)
  try:
    yield ok
  finally:
    if ok:
      _umount(args[-1])


@pytest.fixture(scope='module')
def base_run(tmp_path_factory):
  """A finished tiny run: ckpt-3 and ckpt-6."""
  model_dir = tmp_path_factory.mktemp('base') / 'run'
  run_helpers.train_tiny(model_dir, '--final_eval=false')
  assert (model_dir / 'ckpt-3.index').exists() and (model_dir / 'ckpt-6.index').exists()
  return model_dir


def _copy_run(base_run, target):
  shutil.copytree(base_run, target)
  return target


def test_truncated_newest_checkpoint(base_run, tmp_path):
  run = _copy_run(base_run, tmp_path / 'run')
  data = run / 'ckpt-6.data-00000-of-00001'
  with open(data, 'r+b') as f:  # a copy cut short
    f.truncate(os.path.getsize(data) // 2)
  before = _snapshot(run)

  result = run_helpers.run_script('evaluate.py', f'--model_dir={run}', timeout=300)
  _assert_one_error_line(result, 'evaluate.py', run / 'ckpt-6', 'ckpt-6.data-00000-of-00001',
                         run / 'ckpt-3', status=2)
  exports = tmp_path / 'exports'
  result = run_helpers.run_script('export.py', f'--model_dir={run}',
                                  f'--export_dir={exports}', timeout=300)
  _assert_one_error_line(result, 'export.py', run / 'ckpt-6', run / 'ckpt-3', status=2)
  assert not exports.exists() or not os.listdir(exports)
  assert _snapshot(run) == before  # readers change nothing

  result = run_helpers.run_script('train.py', *TRAIN, f'--model_dir={run}', timeout=300)
  assert result.returncode == 0, _output(result)[-3000:]
  assert 'Traceback' not in _output(result)
  assert f'Resuming from {run}/ckpt-3 (step 3)' in result.stdout
  warnings = [l for l in result.stderr.splitlines() if l.startswith('train.py: warning:')]
  assert any(str(run / 'ckpt-6') in l and 'damaged' in l for l in warnings), result.stderr
  assert re.findall(r'^step (\d+)/6 ', result.stdout, re.M) == ['4', '5', '6']
  # The damaged files are kept, byte for byte, and the new ckpt-6 reads back whole.
  kept = _snapshot(run / 'damaged')
  assert kept == {k: before[k] for k in ('ckpt-6.data-00000-of-00001', 'ckpt-6.index')}
  assert _step_of(run / 'ckpt-6') == 6 and _step_of(run / 'ckpt-3') == 3


def test_deleted_index_and_every_checkpoint_damaged(base_run, tmp_path):
  run = _copy_run(base_run, tmp_path / 'run')
  os.remove(run / 'ckpt-6.index')
  image = tmp_path / 'image.png'
  from PIL import Image
  Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(image)
  out = tmp_path / 'predictions'
  result = run_helpers.run_script('predict.py', f'--model_dir={run}', f'--output_dir={out}',
                                  str(image), timeout=300)
  _assert_one_error_line(result, 'predict.py', run / 'ckpt-6', 'ckpt-6.index', run / 'ckpt-3',
                         status=2)
  assert not out.exists()

  result = run_helpers.run_script('train.py', *TRAIN, f'--model_dir={run}', timeout=300)
  assert result.returncode == 0, _output(result)[-3000:]
  assert f'Resuming from {run}/ckpt-3 (step 3)' in result.stdout
  assert 'ckpt-6.index is missing' in result.stderr
  assert (run / 'damaged' / 'ckpt-6.data-00000-of-00001').exists()
  assert _step_of(run / 'ckpt-6') == 6

  # Every checkpoint damaged: training refuses and moves nothing.
  for step in (3, 6):
    with open(run / f'ckpt-{step}.data-00000-of-00001', 'r+b') as f:
      f.truncate(1000)
  before = _snapshot(run)
  result = run_helpers.run_script('train.py', *TRAIN, f'--model_dir={run}', timeout=300)
  _assert_one_error_line(result, 'train.py', run / 'ckpt-3', run / 'ckpt-6', status=2)
  assert _snapshot(run) == before


def _partial_files(folder):
  return sorted(n for n in os.listdir(folder)
                if n.endswith('.tmp') or '_temp' in n or n.startswith('ckpt-9'))


def test_full_disk_during_a_checkpoint(base_run, tmp_path):
  disk = tmp_path / 'disk'
  disk.mkdir()
  args = (*TRAIN, '--num_steps=9')
  with _mounted('-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', disk) as mounted:
    run = _copy_run(base_run, disk / 'run')
    before = {k: v for k, v in _snapshot(run).items() if k.startswith('ckpt-')}
    filler = disk / 'filler'
    if mounted:  # leave 300 kB: the run's small files fit, a 16 MB checkpoint does not
      free = shutil.disk_usage(disk).free
      with open(filler, 'wb') as f:
        f.write(b'\0' * (free - 300 * 1024))
      result = run_helpers.run_script('train.py', *args, f'--model_dir={run}', timeout=300)
    else:
      result = run_helpers.run_script(
          'tests/fault_injection.py', 'train.py', *args, f'--model_dir={run}', timeout=300,
          env={'FRCNN_TEST_FAULT': 'full_disk', 'FRCNN_TEST_FAULT_DIR': str(run)})
    line = _assert_one_error_line(result, 'train.py', run / 'ckpt-9', f'folder {run}',
                                  status=1)
    assert 'no space left' in line, line
    assert 'step 9/9' in result.stdout  # it failed saving, not before
    assert _partial_files(run) == []
    assert {k: v for k, v in _snapshot(run).items() if k.startswith('ckpt-')} == before
    assert _step_of(run / 'ckpt-6') == 6
    # With room again the same command resumes from the intact checkpoint.
    if mounted:
      os.remove(filler)
      result = run_helpers.run_script('train.py', *args, f'--model_dir={run}', timeout=300)
      assert result.returncode == 0, _output(result)[-3000:]
      assert f'Resuming from {run}/ckpt-6 (step 6)' in result.stdout
      assert _step_of(run / 'ckpt-9') == 9


def test_read_only_model_dir(base_run, tmp_path):
  source = _copy_run(base_run, tmp_path / 'source')
  before = _snapshot(source)
  target = tmp_path / 'readonly'
  target.mkdir()
  args = (*TRAIN, '--num_steps=9')
  with _mounted('--bind', '-o', 'ro', source, target) as mounted:
    env = None
    if mounted:
      run = target
    elif os.geteuid() != 0:
      run = source
      os.chmod(run, 0o555)
    else:
      run = source
      env = {'FRCNN_TEST_FAULT': 'read_only', 'FRCNN_TEST_FAULT_DIR': str(run)}
    try:
      if env:
        result = run_helpers.run_script('tests/fault_injection.py', 'train.py', *args,
                                        f'--model_dir={run}', env=env, timeout=300)
      else:
        result = run_helpers.run_script('train.py', *args, f'--model_dir={run}', timeout=300)
    finally:
      if not mounted:
        os.chmod(source, 0o755)
  line = _assert_one_error_line(result, 'train.py', f'folder {run}', status=1)
  assert 'read-only' in line or 'permission' in line, line
  assert _snapshot(source) == before


def test_second_trainer_refused_and_a_stale_lock_taken_over(tmp_path):
  run = tmp_path / 'run'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)
  first = subprocess.Popen(
      [sys.executable, os.path.join(run_helpers.ROOT, 'train.py'), *TRAIN,
       f'--model_dir={run}', '--num_steps=100000'], cwd=run_helpers.ROOT, env=env,
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    lock = run / 'train.lock'
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None:
      try:
        # The lock is taken first, then flags.cfg written: wait for both.
        if (json.loads(lock.read_text())['pid'] == first.pid
            and (run / 'flags.cfg').exists()):
          break
      except (OSError, ValueError, KeyError):
        pass
      time.sleep(0.1)
    assert first.poll() is None, 'the first trainer stopped'
    flags_before = (run / 'flags.cfg').read_bytes()

    second = run_helpers.run_script('train.py', *TRAIN, f'--model_dir={run}', timeout=300)
    line = _assert_one_error_line(second, 'train.py', f'process {first.pid}', lock,
                                  status=2)
    assert 'in use' in line
    assert (run / 'flags.cfg').read_bytes() == flags_before
  finally:
    first.send_signal(signal.SIGKILL)  # leaves its lock file behind, as a crash would
    first.wait()
  assert json.loads(lock.read_text())['pid'] == first.pid

  third = run_helpers.run_script('train.py', *TRAIN, f'--model_dir={run}',
                                 '--num_steps=100000', '--stop_after_steps=1', timeout=300)
  assert third.returncode == 0, _output(third)[-3000:]
  assert 'Traceback' not in _output(third)
  took = [l for l in third.stderr.splitlines() if 'took over the lock' in l]
  assert len(took) == 1 and f'process {first.pid}' in took[0], third.stderr
  assert not lock.exists()  # released at exit


def _voc_folder(root, names):
  """A VOC folder whose images are not images; split 'train' lists them, 'empty' none."""
  for sub in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
    (root / sub).mkdir(parents=True)
  for name in names:
    (root / 'JPEGImages' / f'{name}.jpg').write_bytes(b'this is not a JPEG file')
    (root / 'Annotations' / f'{name}.xml').write_text(
        f'<annotation><filename>{name}.jpg</filename><size><width>64</width>'
        '<height>64</height><depth>3</depth></size><object><name>thing</name>'
        '<difficult>0</difficult><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>40</xmax>'
        '<ymax>50</ymax></bndbox></object></annotation>')
  (root / 'ImageSets/Main/train.txt').write_text('\n'.join(names) + '\n')
  (root / 'ImageSets/Main/empty.txt').write_text('')
  return root


def test_unreadable_images_and_an_empty_split(tmp_path):
  voc = _voc_folder(tmp_path / 'voc', ['a', 'b', 'c', 'd'])
  result = run_helpers.run_script('train.py', *TRAIN, f'--dataset=voc:{voc}',
                                  f'--model_dir={tmp_path / "run"}', timeout=300)
  _assert_one_error_line(result, 'train.py', voc)
  assert not list((tmp_path / 'run').glob('ckpt-*'))

  result = run_helpers.run_script('train.py', *TRAIN, f'--dataset=voc:{voc}',
                                  '--train_split=empty', f'--model_dir={tmp_path / "run2"}',
                                  timeout=300)
  _assert_one_error_line(result, 'train.py', voc, "'empty'", status=2)
  assert not (tmp_path / 'run2').exists()


def _run_inspect(*args, module='inspect'):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=run_helpers.ROOT)
  return subprocess.run([sys.executable, '-m', f'faster_rcnn_tf.data.{module}', *args],
                        cwd=run_helpers.ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def test_inspect_missing_dataset_and_unwritable_output(tmp_path):
  missing = tmp_path / 'no_such_voc'
  result = _run_inspect(f'--dataset=voc:{missing}')
  _assert_one_error_line(result, 'inspect', missing, status=2)
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  result = _run_inspect('--dataset=shapes', '--max_images=2', f'--output_dir={blocker}/out')
  _assert_one_error_line(result, 'inspect', blocker, status=1)


def test_convert_missing_dataset_and_unwritable_output(tmp_path):
  """The converter as inspect: a bad dataset is the user's (2), a folder it cannot write
  the machine's (1), each one line naming the path."""
  missing = tmp_path / 'no_such_voc'
  result = _run_inspect(f'--dataset=voc:{missing}', f'--output={tmp_path}/out/x',
                        module='convert')
  _assert_one_error_line(result, 'convert', missing, status=2)
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  result = _run_inspect('--dataset=shapes', '--split=test',
                        f'--output={blocker}/out/x', module='convert')
  _assert_one_error_line(result, 'convert', blocker, status=1)
