"""TFDS source without any download: a tiny builder prepared here, and the missing-data error."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from faster_rcnn_tf.data import registry
from faster_rcnn_tf.data import tfds_source

H, W = 40, 60
# (file name, [(pixel yxyx box, label index, difficult)])
EXAMPLES = [
    ('000005.png', [((4, 9, 25, 30), 1, False), ((0, 0, 40, 60), 0, True)]),
    ('000017.png', []),
    ('cat_picture.png', [((10, 10, 10, 30), 0, False), ((1, 2, 3, 4), 2, False)]),
]


class FrcnnTinyDetection(tfds.core.GeneratorBasedBuilder):
  """Three 40x60 images in the layout of tfds voc."""

  # Building a dataset defined in a package (tests.*) makes tfds 4.9 look up its code path
  # through the `importlib_resources` backport, which is not installed (reading prepared
  # data does not); a one-level module name sends it down the plain file path instead.
  __module__ = 'frcnn_tiny_detection'

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3)),
        'image/filename': tfds.features.Text(),
        'objects': tfds.features.Sequence({
            'bbox': tfds.features.BBoxFeature(),
            'label': tfds.features.ClassLabel(names=['cat', 'dog', 'bird']),
            'is_difficult': np.bool_,
        }),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i, (name, objects) in enumerate(EXAMPLES):
      yield i, {
          'image': np.full((H, W, 3), 10 * i, np.uint8),
          'image/filename': name,
          'objects': {
              'bbox': [tfds.features.BBox(y0 / H, x0 / W, y1 / H, x1 / W)
                       for (y0, x0, y1, x1), _, _ in objects],
              'label': [label for _, label, _ in objects],
              'is_difficult': [d for _, _, d in objects],
          },
      }


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  FrcnnTinyDetection(data_dir=path).download_and_prepare()
  return path


def test_reads_prepared_data(data_dir):
  source = registry.get_source('tfds:frcnn_tiny_detection', 'train', data_dir=data_dir)
  assert source.class_names == ['cat', 'dog', 'bird'] and source.num_images == 3
  records = {r['image_id']: r for r in source.records()}
  hashed = tfds_source.image_id_from_name('cat_picture.png')
  assert sorted(records) == sorted([5, 17, hashed]) and hashed > 10**6
  r = records[5]
  assert r['image'].shape == (H, W, 3) and r['image'].dtype == np.uint8
  np.testing.assert_array_equal(r['original_size'], [H, W])
  np.testing.assert_allclose(r['boxes'], [[4, 9, 25, 30], [0, 0, 40, 60]], atol=1e-4)
  np.testing.assert_array_equal(r['classes'], [2, 1])  # tfds label + 1
  np.testing.assert_array_equal(r['difficult'], [False, True])
  assert records[17]['boxes'].shape == (0, 4)
  np.testing.assert_array_equal(records[hashed]['classes'], [3])  # zero-area box dropped
  summary = source.problems.summary()
  assert summary['zero_area_box'] == {'count': 1, 'examples': ['cat_picture.png']}
  assert summary['no_objects'] == {'count': 1, 'examples': ['000017.png']}


def test_class_subset_and_shuffled_dataset(data_dir):
  source = registry.get_source('tfds:frcnn_tiny_detection', 'train', data_dir=data_dir,
                               classes=['dog'])
  assert source.class_names == ['dog']
  ds = source.as_dataset(shuffle_seed=4)
  ids = sorted(int(r['image_id']) for r in ds.as_numpy_iterator())
  assert len(ids) == 3
  r = next(x for x in source.records() if x['image_id'] == 5)
  np.testing.assert_array_equal(r['classes'], [1])
  assert source.problems.count('unknown_class') == 3  # two cats and the bird


def test_missing_data_error_names_data_dir_and_build_command(tmp_path):
  with pytest.raises(tfds_source.DataNotPreparedError) as e:
    registry.get_source('tfds:voc/2007', 'train', data_dir=str(tmp_path))
  message = str(e.value)
  assert '--data_dir' in message and str(tmp_path) in message
  assert 'tfds build voc/2007 --data_dir=' in message


def test_unknown_dataset_name(tmp_path):
  with pytest.raises(ValueError, match='no such TFDS dataset'):
    registry.get_source('tfds:no_such_dataset_xyz', 'train', data_dir=str(tmp_path))
