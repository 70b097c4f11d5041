"""Where evaluate.py's flag values come from: a run's flags.cfg, --flagfile(s), the command line.

Precedence, lowest first:
  1. the defaults;
  2. `<run folder>/flags.cfg` written by train.py (the resolved training flags): only the
     names in `run_flag_names` are taken from it (dataset, model and a few evaluation
     settings); the run folder is --model_dir, or else the folder of --checkpoint;
  3. the command line, in order, with each --flagfile expanded in place (absl semantics:
     a later value wins).

Training flagfiles (configs/*.cfg) and flags.cfg name flags evaluate.py does not define
(--num_steps, --learning_rate, absl/TensorFlow internals, ...): inside files those are
ignored (`ParsedFlags.ignored` lists them); on the command line itself an unknown flag is
an error, as usual.
"""

import dataclasses
import os
from typing import List, Optional, Sequence

from absl import flags

RUN_FLAGS_FILENAME = 'flags.cfg'
CLASSES_FILENAME = 'classes.json'


@dataclasses.dataclass
class ParsedFlags:
  """What `parse` did: positional arguments left, ignored flag names, the flags.cfg used."""
  positional: List[str]
  ignored: List[str]
  run_flags_file: Optional[str]


def flag_name(arg: str) -> Optional[str]:
  """'--name=value' / '--name' / '-name' -> 'name'; None for a non-flag argument."""
  if not arg.startswith('-') or arg in ('-', '--'):
    return None
  return arg.lstrip('-').split('=', 1)[0]


def defined_name(flag_values: flags.FlagValues, name: str) -> Optional[str]:
  """The defined flag an argument name refers to ('noflip' -> 'flip'), or None."""
  if name in flag_values:
    return name
  if name.startswith('no') and name[2:] in flag_values and isinstance(
      flag_values[name[2:]], flags.BooleanFlag):
    return name[2:]
  return None


def _expand(flag_values, args):
  """[(arg, from_file)] with every --flagfile argument replaced by the file's arguments."""
  out = []
  i = 0
  while i < len(args):
    arg = args[i]
    if arg == '--':
      out.extend((a, False) for a in args[i:])
      break
    if flag_name(arg) == 'flagfile':
      if '=' not in arg and i + 1 < len(args):  # '--flagfile FILE'
        arg = f'--flagfile={args[i + 1]}'
        i += 1
      out.extend((a, True) for a in flag_values.read_flags_from_files([arg], force_gnu=False))
    else:
      out.append((arg, False))
    i += 1
  return out


def _filter_file_args(flag_values, expanded, allowed=None):
  """Keeps command-line args and the file args naming defined (and allowed) flags."""
  kept, ignored = [], []
  for arg, from_file in expanded:
    name = flag_name(arg)
    if not from_file or name is None:
      kept.append(arg)
      continue
    target = defined_name(flag_values, name)
    if target is None or (allowed is not None and target not in allowed):
      if target is None and name not in ignored:
        ignored.append(name)
      continue
    kept.append(arg)
  return kept, ignored


def run_folder(model_dir: Optional[str], checkpoint: Optional[str]) -> Optional[str]:
  """The training run folder whose flags.cfg / classes.json describe the model, if any.

  --model_dir when given; otherwise the folder of --checkpoint (a checkpoint folder, or
  the folder of a checkpoint prefix), or its parent when only that has a flags.cfg
  (train.py's best/ checkpoints).
  """
  if model_dir:
    return model_dir
  if not checkpoint:
    return None
  folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint) or '.'
  for candidate in (folder, os.path.dirname(os.path.abspath(folder))):
    if os.path.isfile(os.path.join(candidate, RUN_FLAGS_FILENAME)):
      return candidate
  return folder


def parse(flag_values: flags.FlagValues, argv: Sequence[str],
          run_flag_names: Sequence[str], model_dir_flag: str = 'model_dir',
          checkpoint_flag: Optional[str] = 'checkpoint') -> ParsedFlags:
  """Parses argv into flag_values with the precedence of the module docstring.

  Args:
    flag_values: the FlagValues to fill (flags.FLAGS in a script).
    argv: the full argv (argv[0] is the program).
    run_flag_names: the flags taken from a run's flags.cfg.
    model_dir_flag, checkpoint_flag: the flags that locate the run folder.
  Returns:
    `ParsedFlags`.
  Raises:
    flags.Error (or a subclass) for unknown command-line flags, bad values or an
    unreadable flagfile.
  """
  program = argv[0] if argv else 'evaluate.py'
  expanded = _expand(flag_values, list(argv[1:]))
  user_args, ignored = _filter_file_args(flag_values, expanded)
  positional = flag_values([program] + user_args)[1:]
  folder = run_folder(getattr(flag_values, model_dir_flag, None),
                      getattr(flag_values, checkpoint_flag, None) if checkpoint_flag else None)
  cfg = os.path.join(folder, RUN_FLAGS_FILENAME) if folder else None
  if cfg is None or not os.path.isfile(cfg):
    return ParsedFlags(positional, ignored, None)
  cfg_args = [(a, True) for a in flag_values.read_flags_from_files([f'--flagfile={cfg}'],
                                                                   force_gnu=False)]
  cfg_kept, _ = _filter_file_args(flag_values, cfg_args, allowed=set(run_flag_names))
  flag_values.unparse_flags()
  positional = flag_values([program] + cfg_kept + user_args)[1:]
  return ParsedFlags(positional, ignored, cfg)
