"""The Source base class: records(), as_dataset(), skipped images."""

import numpy as np

from faster_rcnn_tf.data import records
from faster_rcnn_tf.data.source import Source


class _Numbers(Source):
  """Image i is filled with value i; every third image cannot be loaded."""

  decode_threads = 3

  def __init__(self, n):
    super().__init__('numbers', 'train', ['x'])
    self.n = n

  def __len__(self):
    return self.n

  def load(self, index):
    if index % 3 == 2:
      self.problems.report('unreadable_image', f'{index}.jpg', 'skipped')
      return None
    image = np.full((4 + index, 5, 3), index, np.uint8)
    return records.make_record(image, [[0, 0, 1, 1]], [1], None, index)


def test_records_in_order_skipping_unloadable():
  source = _Numbers(10)
  got = [int(r['image_id']) for r in source.records()]
  assert got == [0, 1, 3, 4, 6, 7, 9]
  assert source.problems.count('unreadable_image') == 3
  assert source.category_ids == [1] and source.num_classes == 1 and source.num_images == 10


def test_as_dataset_matches_records_and_shuffles_by_seed():
  source = _Numbers(10)
  ds = list(source.as_dataset().as_numpy_iterator())
  assert [int(r['image_id']) for r in ds] == [0, 1, 3, 4, 6, 7, 9]
  for r in ds:
    i = int(r['image_id'])
    assert r['image'].shape == (4 + i, 5, 3) and np.all(r['image'] == i)
    np.testing.assert_array_equal(r['original_size'], [4 + i, 5])
  shuffled = source.as_dataset(shuffle_seed=5)
  one = [int(r['image_id']) for r in shuffled.as_numpy_iterator()]
  two = [int(r['image_id']) for r in shuffled.as_numpy_iterator()]
  again = [int(r['image_id']) for r in source.as_dataset(shuffle_seed=5).as_numpy_iterator()]
  assert sorted(one) == [0, 1, 3, 4, 6, 7, 9]
  assert one == again and one != two  # seeded, and a new order for the next epoch
