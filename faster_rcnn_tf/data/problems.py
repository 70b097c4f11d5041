"""A counter of real-world data problems, each also logged as a warning.

Every dataset source owns one `Problems` object (`source.problems`). Loading code calls
`problems.report(kind, filename, detail)` whenever it meets something wrong with the data
and decides what to do about it (skip the image, drop or clip a box, convert the image).
Nothing is ever silent: each problem is logged with `absl.logging.warning` naming the file
and the problem (the first `max_logged` of each kind; after that one line says that further
ones of that kind are only counted), and `problems.summary()` gives

    {kind: {'count': int, 'examples': [first few file names]}}

The same (kind, filename, detail) is counted once, so iterating a source several times
(epochs) does not inflate the counts.

Kinds used by the sources (what happens is in brackets):

    missing_annotation   image listed in the split file has no XML           [image skipped]
    malformed_annotation annotation file cannot be parsed                    [image skipped]
    missing_image        image file not found                                [image skipped]
    unreadable_image     image file cannot be decoded                        [image skipped]
    truncated_image      image file ends early                               [image skipped]
    wrong_extension      file content is another format than its extension   [decoded anyway]
    grayscale_image      1-channel (or 16-bit / float) image                 [converted to RGB]
    alpha_image          image with an alpha channel                         [alpha dropped]
    palette_image        palette (indexed colour) image                      [converted to RGB]
    cmyk_image           CMYK / YCbCr / other colour space                   [converted to RGB]
    missing_size         annotation's image size is zero or absent           [image size used]
    size_mismatch        annotation's image size disagrees with the image    [image size used]
    zero_area_box        box with zero width or height as annotated          [box dropped]
    inverted_box         box with max < min                                  [box dropped]
    invalid_box          box coordinates missing, non-numeric or not finite  [box dropped]
    box_clipped          box partly outside the image                        [box clipped]
    box_outside_image    box entirely outside the image                      [box dropped]
    unknown_class        object's class not in the source's class_names      [box dropped]
    crowd_box            COCO iscrowd=1 annotation                           [box dropped]
    orphan_annotation    COCO annotation whose image_id is not in `images`   [ignored]
    no_objects           image without any (remaining) object                [kept: background]
    too_many_boxes       more boxes than the pipeline's max_boxes            [first max_boxes kept]
"""

import threading

from absl import logging


class Problems:
  """Thread-safe counter of data problems (see the module docstring for the kinds)."""

  def __init__(self, source_name='', max_examples=5, max_logged=20):
    self.source_name = source_name
    self.max_examples = max_examples
    self.max_logged = max_logged
    self._lock = threading.Lock()
    self._seen = set()
    self._counts = {}
    self._examples = {}

  def report(self, kind, filename, detail=''):
    """Counts (once per distinct (kind, filename, detail)) and logs one problem.

    Args:
      kind: short snake_case problem kind (see module docstring).
      filename: the file (or image id, as a string) the problem is in.
      detail: human-readable specifics, including what was done about it.
    """
    filename = str(filename)
    key = (kind, filename, detail)
    with self._lock:
      if key in self._seen:
        return
      self._seen.add(key)
      count = self._counts.get(kind, 0) + 1
      self._counts[kind] = count
      examples = self._examples.setdefault(kind, [])
      if filename not in examples and len(examples) < self.max_examples:
        examples.append(filename)
    prefix = f'[{self.source_name}] ' if self.source_name else ''
    if count <= self.max_logged:
      logging.warning('%s%s: %s%s', prefix, filename, kind, f' ({detail})' if detail else '')
    if count == self.max_logged + 1:
      logging.warning('%sfurther %r problems are counted (see the summary) but not logged',
                      prefix, kind)

  def count(self, kind):
    """Number of distinct problems of `kind` reported so far."""
    with self._lock:
      return self._counts.get(kind, 0)

  def summary(self):
    """{kind: {'count': int, 'examples': [file names]}}, kinds sorted."""
    with self._lock:
      return {k: {'count': self._counts[k], 'examples': list(self._examples[k])}
              for k in sorted(self._counts)}

  def __contains__(self, kind):
    return self.count(kind) > 0

  def __repr__(self):
    return f'Problems({ {k: v["count"] for k, v in self.summary().items()} })'


def nothing_loaded_message(source, max_kinds=3):
  """One line for a split of which no image could be loaded: names the source (its folder
  or files), the split and the first problems of each kind met.

  Args:
    source: a dataset source, after iterating it (its `problems` are filled in).
    max_kinds: problem kinds named.
  Returns:
    str.
  """
  summary = source.problems.summary()
  if not [k for k in summary if k != 'no_objects']:
    # Decoded in TF ops, which report nothing: the Python path names the problems.
    for _ in source.records():
      break
    summary = source.problems.summary()
  skipping = [k for k in summary if k != 'no_objects']
  parts = []
  for kind in skipping[:max_kinds]:
    item = summary[kind]
    parts.append(f"{kind} x{item['count']} ({', '.join(item['examples'][:3])})")
  found = '; '.join(parts) if parts else 'no problem was reported'
  return (f'{source.name}: split {source.split!r}: none of its {source.num_images} '
          f'images could be loaded; first problems: {found}')
