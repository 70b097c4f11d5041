"""Image decoding with format sniffing and RGB conversion."""

import io

import numpy as np
import pytest
from PIL import Image

from faster_rcnn_tf.data import decode
from faster_rcnn_tf.data.problems import Problems


def _encode(array, fmt, mode=None):
  out = io.BytesIO()
  Image.fromarray(array, mode).save(out, fmt)
  return out.getvalue()


RGB = np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8)


def _decode(data, name):
  p = Problems()
  return decode.decode_image_bytes(data, name, p), p.summary()


def test_png_named_jpg_decodes_exactly_and_is_reported():
  image, problems = _decode(_encode(RGB, 'PNG'), 'x.jpg')
  np.testing.assert_array_equal(image, RGB)
  assert problems == {'wrong_extension': {'count': 1, 'examples': ['x.jpg']}}


def test_rgb_jpeg_no_problem():
  image, problems = _decode(_encode(RGB, 'JPEG'), 'x.jpg')
  assert image.shape == (12, 16, 3) and image.dtype == np.uint8 and problems == {}


@pytest.mark.parametrize('mode, fmt, kind', [
    ('L', 'PNG', 'grayscale_image'), ('LA', 'PNG', 'alpha_image'),
    ('RGBA', 'PNG', 'alpha_image'), ('CMYK', 'JPEG', 'cmyk_image'),
])
def test_modes_become_rgb(mode, fmt, kind):
  source = Image.fromarray(RGB).convert(mode)
  out = io.BytesIO()
  source.save(out, fmt)
  image, problems = _decode(out.getvalue(), 'x.' + fmt.lower())
  assert image.shape == (12, 16, 3) and image.dtype == np.uint8
  assert set(problems) == {kind}
  if mode in ('L', 'LA'):
    expected = np.asarray(source.convert('L'))
    for c in range(3):
      np.testing.assert_array_equal(image[..., c], expected)
  if mode == 'RGBA':
    np.testing.assert_array_equal(image, RGB)


def test_16bit_grayscale_is_scaled_not_saturated():
  array = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300).astype(np.uint16)
  out = io.BytesIO()
  Image.fromarray(array).save(out, 'PNG')
  image, problems = _decode(out.getvalue(), 'x.png')
  assert set(problems) == {'grayscale_image'}
  np.testing.assert_array_equal(image[..., 0], np.round(array / 65535 * 255).astype(np.uint8))


def test_truncated_and_garbage_are_skipped():
  jpeg = _encode(RGB, 'JPEG')
  image, problems = _decode(jpeg[:len(jpeg) // 2], 'cut.jpg')
  assert image is None and set(problems) == {'truncated_image'}
  image, problems = _decode(b'not an image at all', 'junk.jpg')
  assert image is None and set(problems) == {'unreadable_image'}


def test_missing_file(tmp_path):
  p = Problems()
  assert decode.decode_image_file(str(tmp_path / 'nope.jpg'), p, report_name='nope.jpg') is None
  assert p.summary()['missing_image']['examples'] == ['nope.jpg']


def test_sniff_format():
  assert decode.sniff_format(_encode(RGB, 'PNG')) == 'PNG'
  assert decode.sniff_format(_encode(RGB, 'JPEG')) == 'JPEG'
  assert decode.sniff_format(_encode(RGB, 'BMP')) == 'BMP'
  assert decode.sniff_format(b'hello') is None
