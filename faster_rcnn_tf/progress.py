"""A one-line progress display for long loops (training steps, evaluation batches)."""

import sys
import time


def format_seconds(seconds):
  seconds = int(max(seconds, 0))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


class Progress:
  """Prints `label done/total | fields | rate | ETA` at most every `every` seconds.

  On a terminal the line is redrawn in place; elsewhere (logs, CI) one line is printed
  per update.
  """

  def __init__(self, label, total, unit='it', every=5.0, stream=None, start=0):
    self.label = label
    self.total = total
    self.unit = unit
    self.every = every
    self.stream = stream or sys.stdout
    self.start_time = time.time()
    self.start = start
    self.last_print = 0.0
    self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()

  def rate(self, done):
    elapsed = time.time() - self.start_time
    return (done - self.start) / elapsed if elapsed > 0 else 0.0

  def update(self, done, fields='', force=False, units_per_item=1):
    now = time.time()
    if not force and now - self.last_print < self.every and done < self.total:
      return
    self.last_print = now
    rate = self.rate(done)
    eta = (self.total - done) / rate if rate > 0 else 0.0
    line = (f'{self.label} {done}/{self.total}' + (f' | {fields}' if fields else '')
            + f' | {rate * units_per_item:.2f} {self.unit}/s | ETA {format_seconds(eta)}')
    if self.tty:
      self.stream.write('\r' + line + '\x1b[K')
      if done >= self.total:
        self.stream.write('\n')
    else:
      self.stream.write(line + '\n')
    self.stream.flush()
