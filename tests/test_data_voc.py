"""VOC source: the real bccd/raccoon data, and one small broken dataset per problem case."""

import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

from faster_rcnn_tf.data import voc

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get('FRCNN_SHARED_DATA', os.path.join(_REPO, '..', 'shared', 'data'))


def _shared(name):
  path = os.path.join(SHARED, name)
  if not os.path.isdir(path):
    message = f'real data not found at {path} (set FRCNN_SHARED_DATA)'
    if os.environ.get('CI'):  # CI always has shared/ beside the clone: never skip there
      pytest.fail(message)
    pytest.skip(message)
  return path


# ---------------------------------------------------------------- real data

def test_bccd_train_split_has_205_images_in_split_file_order():
  source = voc.VocSource(_shared('bccd'), 'train')
  assert source.num_images == 205
  ids = [r['image_id'] for r in source.records()]
  assert ids == list(range(205))
  with open(os.path.join(_shared('bccd'), 'ImageSets', 'Main', 'train.txt')) as f:
    assert f.readline().strip() == source.split_ids[0]


def test_bccd_whole_set_matches_readme_counts_and_drops_two_zero_area_boxes():
  source = voc.VocSource(_shared('bccd'), 'all')
  assert source.class_names == ['Platelets', 'RBC', 'WBC']
  kept = np.zeros(3, int)
  images = 0
  by_id = {}
  for r in source.records():
    images += 1
    kept += np.bincount(r['classes'] - 1, minlength=3)
    by_id[source.split_ids[r['image_id']]] = r
    assert r['image'].shape == (480, 640, 3)
  assert images == 364
  summary = source.problems.summary()
  assert summary['zero_area_box']['count'] == 2
  assert sorted(summary['zero_area_box']['examples']) == [
      'Annotations/BloodImage_00338.xml', 'Annotations/BloodImage_00343.xml']
  # README: RBC 4155, WBC 372, Platelets 361; both zero-area boxes are RBCs.
  assert dict(zip(source.class_names, kept.tolist())) == {
      'Platelets': 361, 'RBC': 4155 - 2, 'WBC': 372}
  # BloodImage_00338: 14 objects in the XML, the zero-area one (504, 337) is gone; its first
  # object is RBC (xmin 453, ymin 81, xmax 555, ymax 182) -> yxyx (80, 452, 182, 555).
  r = by_id['BloodImage_00338']
  assert len(r['boxes']) == 13
  np.testing.assert_array_equal(r['boxes'][0], [80, 452, 182, 555])
  assert not np.any((r['boxes'][:, 2] - r['boxes'][:, 0]) * (r['boxes'][:, 3] - r['boxes'][:, 1])
                    <= 1)
  assert set(summary) == {'zero_area_box'}


def test_raccoon_grayscale_images_come_out_rgb():
  source = voc.VocSource(_shared('raccoon'), 'all')
  gray = ['raccoon-150', 'raccoon-152', 'raccoon-161']
  for stem in gray:
    index = source.split_ids.index(stem)  # nothing is skipped in raccoon: index == image_id
    r = source.load(index)
    assert r['image_id'] == index
    assert r['image'].ndim == 3 and r['image'].shape[2] == 3 and r['image'].dtype == np.uint8
    assert np.array_equal(r['image'][..., 0], r['image'][..., 1])
    assert np.array_equal(r['image'][..., 0], r['image'][..., 2])
  summary = source.problems.summary()
  assert summary['grayscale_image']['count'] == 3
  assert sorted(summary['grayscale_image']['examples']) == [f'JPEGImages/{s}.jpg' for s in gray]


# ---------------------------------------------------------------- broken datasets

H, W = 40, 60
GOOD_VOC = (10, 5, 30, 25)           # xmin, ymin, xmax, ymax as written in the XML
GOOD_BOX = [4, 9, 25, 30]            # the same in the project's yxyx continuous pixels


def _xml(stem, objects, width=W, height=H, ext='.jpg'):
  parts = [f'<annotation><folder>VOC</folder><filename>{stem}{ext}</filename>'
           f'<size><width>{width}</width><height>{height}</height><depth>3</depth></size>']
  for obj in objects:
    name, coords = obj[0], obj[1]
    difficult = obj[2] if len(obj) > 2 else 0
    box = ''.join(f'<{t}>{v}</{t}>' for t, v in zip(('xmin', 'ymin', 'xmax', 'ymax'), coords))
    parts.append(f'<object><name>{name}</name><difficult>{difficult}</difficult>'
                 f'<bndbox>{box}</bndbox></object>')
  parts.append('</annotation>')
  return ''.join(parts)


def _image_bytes(fmt, mode='RGB', size=(H, W)):
  rng = np.random.default_rng(0)
  if mode == 'P':
    image = Image.fromarray(rng.integers(0, 4, size, dtype=np.uint8), 'P')
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0] + [0] * (256 * 3 - 12))
  elif mode == 'L':
    image = Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8), 'L')
  elif mode == 'RGBA':
    image = Image.fromarray(rng.integers(0, 255, size + (4,), dtype=np.uint8), 'RGBA')
  else:
    image = Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8), 'RGB')
  out = io.BytesIO()
  image.save(out, fmt)
  return out.getvalue()


def _write(root, files, split_ids):
  for rel, content in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(content.encode('utf-8') if isinstance(content, str) else content)
  os.makedirs(os.path.join(root, 'ImageSets', 'Main'), exist_ok=True)
  with open(os.path.join(root, 'ImageSets', 'Main', 'train.txt'), 'w') as f:
    f.write(''.join(f'{i}\n' for i in split_ids))


def _good_files():
  return {'Annotations/good.xml': _xml('good', [('cat', GOOD_VOC)]),
          'JPEGImages/good.jpg': _image_bytes('JPEG')}


def _bad(xml=None, image=None, image_name='JPEGImages/bad.jpg'):
  files = {}
  if xml is not None:
    files['Annotations/bad.xml'] = xml
  if image is not None:
    files[image_name] = image
  return files


_JPEG = _image_bytes('JPEG')

# name -> (bad files, expected kind, expected bad-record boxes or None when skipped,
#          extra source kwargs)
CASES = {
    'png_named_jpg': (_bad(_xml('bad', [('cat', GOOD_VOC)]), _image_bytes('PNG')),
                      'wrong_extension', [GOOD_BOX], {}),
    'grayscale': (_bad(_xml('bad', [('cat', GOOD_VOC)]), _image_bytes('JPEG', 'L')),
                  'grayscale_image', [GOOD_BOX], {}),
    'rgba': (_bad(_xml('bad', [('cat', GOOD_VOC)], ext='.png'), _image_bytes('PNG', 'RGBA'),
                  'JPEGImages/bad.png'), 'alpha_image', [GOOD_BOX], {}),
    'palette': (_bad(_xml('bad', [('cat', GOOD_VOC)], ext='.png'), _image_bytes('PNG', 'P'),
                     'JPEGImages/bad.png'), 'palette_image', [GOOD_BOX], {}),
    'truncated_jpeg': (_bad(_xml('bad', [('cat', GOOD_VOC)]), _JPEG[:len(_JPEG) // 2]),
                       'truncated_image', None, {}),
    'zero_xml_size': (_bad(_xml('bad', [('cat', GOOD_VOC)], width=0, height=0), _JPEG),
                      'missing_size', [GOOD_BOX], {}),
    'xml_size_disagrees': (_bad(_xml('bad', [('cat', (10, 5, 90, 25))], width=100,
                                     height=100), _JPEG),
                           'size_mismatch', [[4, 9, 25, W]], {}),
    'zero_area_box': (_bad(_xml('bad', [('cat', (7, 7, 7, 20)), ('cat', GOOD_VOC)]), _JPEG),
                      'zero_area_box', [GOOD_BOX], {}),
    'inverted_box': (_bad(_xml('bad', [('cat', (30, 5, 10, 25)), ('cat', GOOD_VOC)]), _JPEG),
                     'inverted_box', [GOOD_BOX], {}),
    'box_partly_outside': (_bad(_xml('bad', [('cat', (50, 20, 80, 35))]), _JPEG),
                           'box_clipped', [[19, 49, 35, W]], {}),
    'box_outside': (_bad(_xml('bad', [('cat', (70, 5, 90, 25)), ('cat', GOOD_VOC)]), _JPEG),
                    'box_outside_image', [GOOD_BOX], {}),
    'non_numeric_box': (_bad(_xml('bad', [('cat', ('a', 5, 30, 25)), ('cat', GOOD_VOC)]), _JPEG),
                        'invalid_box', [GOOD_BOX], {}),
    'no_objects': (_bad(_xml('bad', []), _JPEG), 'no_objects', [], {}),
    'unknown_class': (_bad(_xml('bad', [('dog', (1, 1, 9, 9)), ('cat', GOOD_VOC)]), _JPEG),
                      'unknown_class', [GOOD_BOX], {'classes': ['cat']}),
    'missing_image': (_bad(_xml('bad', [('cat', GOOD_VOC)])), 'missing_image', None, {}),
    'malformed_xml': (_bad('<annotation><object><name>cat</name></annot', _JPEG),
                      'malformed_annotation', None, {}),
    'missing_xml': (_bad(None, _JPEG), 'missing_annotation', None, {}),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_broken_dataset_case(case, tmp_path, caplog):
  bad_files, kind, bad_boxes, kwargs = CASES[case]
  files = _good_files()
  files.update(bad_files)
  _write(str(tmp_path), files, ['good', 'bad'])
  with caplog.at_level(logging.WARNING):
    source = voc.VocSource(str(tmp_path), 'train', **kwargs)
    records = {r['image_id']: r for r in source.records()}

  summary = source.problems.summary()
  assert summary[kind]['count'] == 1, summary
  assert 'bad' in summary[kind]['examples'][0]
  assert any(kind in m and 'bad.' in m for m in caplog.messages), caplog.messages
  # Nothing else went wrong (the good image has no problems at all).
  assert all('good' not in e for v in summary.values() for e in v['examples']), summary

  good = records[0]  # image_id = line index in train.txt
  assert good['image'].shape == (H, W, 3) and good['image'].dtype == np.uint8
  np.testing.assert_array_equal(good['boxes'], [GOOD_BOX])
  np.testing.assert_array_equal(good['classes'], [1])
  np.testing.assert_array_equal(good['original_size'], [H, W])
  if bad_boxes is None:
    assert set(records) == {0}
  else:
    bad = records[1]
    assert bad['image'].shape == (H, W, 3) and bad['image'].dtype == np.uint8
    np.testing.assert_array_equal(bad['boxes'].reshape(-1, 4),
                                  np.asarray(bad_boxes, np.float32).reshape(-1, 4))
    assert bad['boxes'].dtype == np.float32 and bad['classes'].dtype == np.int32
    assert len(bad['classes']) == len(bad_boxes)


def test_palette_colours_and_grayscale_values_survive_conversion(tmp_path):
  files = {'Annotations/bad.xml': _xml('bad', [('cat', GOOD_VOC)], ext='.png'),
           'JPEGImages/bad.png': _image_bytes('PNG', 'P')}
  _write(str(tmp_path), files, ['bad'])
  record = next(voc.VocSource(str(tmp_path), 'train').records())
  indices = np.random.default_rng(0).integers(0, 4, (H, W), dtype=np.uint8)
  palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)
  np.testing.assert_array_equal(record['image'], palette[indices])


def test_difficult_kept_and_flagged_classes_sorted_and_split_ids(tmp_path):
  files = {
      'Annotations/a.xml': _xml('a', [('zebra', GOOD_VOC, 1), ('cat', (1, 1, 10, 10))]),
      'Annotations/b.xml': _xml('b', [('dog', GOOD_VOC)]),  # not in the split
      'JPEGImages/a.jpg': _JPEG, 'JPEGImages/b.jpg': _JPEG,
  }
  _write(str(tmp_path), files, [])
  with open(os.path.join(tmp_path, 'ImageSets', 'Main', 'train.txt'), 'w') as f:
    f.write('\nb\n\na\n')  # blank lines do not count
  source = voc.VocSource(str(tmp_path), 'train')
  # Classes come from all annotations, sorted, so every split gets the same ids.
  assert source.class_names == ['cat', 'dog', 'zebra']
  assert source.category_ids == [1, 2, 3]
  records = list(source.records())
  assert [r['image_id'] for r in records] == [0, 1]
  a = records[1]
  np.testing.assert_array_equal(a['classes'], [3, 1])
  np.testing.assert_array_equal(a['difficult'], [True, False])
  np.testing.assert_array_equal(a['boxes'], [GOOD_BOX, [0, 0, 10, 10]])
  assert source.problems.summary() == {}


def test_missing_split_names_available_splits(tmp_path):
  _write(str(tmp_path), _good_files(), ['good'])
  with pytest.raises(FileNotFoundError, match='train'):
    voc.VocSource(str(tmp_path), 'val')


def test_iterating_twice_does_not_double_count(tmp_path):
  files = _good_files()
  files.update(CASES['zero_area_box'][0])
  _write(str(tmp_path), files, ['good', 'bad'])
  source = voc.VocSource(str(tmp_path), 'train')
  list(source.records())
  list(source.records())
  assert source.problems.count('zero_area_box') == 1
