"""The TF Object Detection API's label map text format (label_map.pbtxt), read and written.

    item {
      id: 1
      name: 'Platelets'
      display_name: 'Platelets'
    }

One `item` per class; `id` is the integer written in `image/object/class/label` (0 is
background and not allowed), `name` the text written in `image/object/class/text`.
`display_name` is optional. Other fields (and nested blocks such as `keypoints { ... }`)
are skipped. `#` starts a comment outside quotes.
"""

import re

_TOKEN = re.compile(r'''\s*(?:(#[^\n]*)|([{}])|([A-Za-z_][A-Za-z0-9_]*)\s*:?|'''
                    r'''('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|([-+0-9.eE]+))''')


def _tokens(text, path):
  pos = 0
  while pos < len(text):
    if text[pos:].strip() == '':
      return
    match = _TOKEN.match(text, pos)
    if not match or match.end() == pos:
      line = text.count('\n', 0, pos) + 1
      raise ValueError(f'{path}: line {line}: cannot read {text[pos:pos + 20].strip()!r}')
    pos = match.end()
    comment, brace, word, string, number = match.groups()
    if comment:
      continue
    line = text.count('\n', 0, match.start()) + 1
    if brace:
      yield brace, brace, line
    elif word:
      yield 'word', word, line
    elif string:
      body = string[1:-1]
      yield 'value', re.sub(r'\\(.)', r'\1', body), line
    else:
      yield 'value', number, line


def parse_label_map(text, path='label map'):
  """Items of a label_map.pbtxt text.

  Args:
    text: the file's contents.
    path: names the file in error messages.
  Returns:
    list of dicts {'id': int, 'name': str, 'display_name': str}, sorted by id.
  Raises:
    ValueError: malformed text, an item without id or name, an id below 1, a repeated id
      or name (the message names the file and line).
  """
  items = []
  depth = 0
  current = None
  key = None
  for kind, value, line in _tokens(text, path):
    if kind == '{':
      if depth == 0:
        if key != 'item':
          raise ValueError(f'{path}: line {line}: expected "item {{", got {key!r}')
        current = {'line': line}
      depth += 1
      key = None
    elif kind == '}':
      depth -= 1
      if depth < 0:
        raise ValueError(f'{path}: line {line}: unbalanced "}}"')
      if depth == 0:
        items.append(current)
        current = None
    elif kind == 'word':
      key = value
    else:
      if key is None:
        raise ValueError(f'{path}: line {line}: value {value!r} without a field name')
      if depth == 1 and key in ('id', 'name', 'display_name'):
        current[key] = value
      key = None
  if depth:
    raise ValueError(f'{path}: unbalanced "{{" (an item is not closed)')
  out, ids, names = [], set(), set()
  for item in items:
    where = f'{path}: item at line {item["line"]}'
    if 'id' not in item or 'name' not in item:
      raise ValueError(f'{where}: needs both "id" and "name"')
    try:
      item_id = int(item['id'])
    except ValueError:
      raise ValueError(f'{where}: id {item["id"]!r} is not an integer') from None
    if item_id < 1:
      raise ValueError(f'{where}: id {item_id} (0 is background; ids start at 1)')
    if item_id in ids or item['name'] in names:
      raise ValueError(f'{where}: id {item_id} or name {item["name"]!r} appears twice')
    ids.add(item_id)
    names.add(item['name'])
    out.append({'id': item_id, 'name': item['name'],
                'display_name': item.get('display_name', item['name'])})
  return sorted(out, key=lambda i: i['id'])


def read_label_map(path):
  """`parse_label_map` of a file."""
  with open(path, encoding='utf-8') as f:
    return parse_label_map(f.read(), path)


def _quote(text):
  return "'" + str(text).replace('\\', '\\\\').replace("'", "\\'") + "'"


def format_label_map(class_names, ids=None):
  """label_map.pbtxt text: item i has id ids[i] (default i + 1) and name class_names[i]."""
  ids = list(range(1, len(class_names) + 1)) if ids is None else list(ids)
  return ''.join(f'item {{\n  id: {i}\n  name: {_quote(n)}\n  display_name: {_quote(n)}\n}}\n'
                 for i, n in zip(ids, class_names))
