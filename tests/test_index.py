"""The on-disk index: round trip, search, and clear errors for every kind of bad file."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

from aah_jax.retrieval import index as index_lib, ranking


def _index(n=50, bits=20, multi_hot=False, seed=0):
  rng = np.random.default_rng(seed)
  codes = rng.choice([-1, 1], (n, bits))
  labels = (rng.random((n, 7)) < 0.3).astype(int) if multi_hot else rng.integers(0, 5, n)
  paths = [f'/data/vögel/{i}.jpg' for i in range(n)]  # non-ASCII paths survive
  return codes, index_lib.build_index(codes, labels=labels, ids=np.arange(n) + 100, paths=paths,
                                      meta={'step': 7, 'class_names': ['a', 'b']})


@pytest.mark.parametrize('multi_hot', [False, True])
def test_round_trip_keeps_everything(tmp_path, multi_hot):
  codes, index = _index(multi_hot=multi_hot)
  path = str(tmp_path / 'codes.idx')
  index_lib.save_index(path, index)
  loaded = index_lib.load_index(path)
  assert loaded.bits == 20 and len(loaded) == 50 and loaded.meta == index.meta
  np.testing.assert_array_equal(loaded.codes.words, ranking.pack_codes(codes).words)
  np.testing.assert_array_equal(loaded.labels, index.labels)
  np.testing.assert_array_equal(loaded.ids, np.arange(50) + 100)
  assert list(loaded.paths) == [f'/data/vögel/{i}.jpg' for i in range(50)]
  queries = np.random.default_rng(1).choice([-1, 1], (4, 20))
  for got, want in zip(loaded.search(queries, 6), ranking.search(queries, codes, 6)):
    np.testing.assert_array_equal(got, want)
  assert list(tmp_path.iterdir()) == [tmp_path / 'codes.idx']  # no temporary file left


def _members(path):
  with np.load(path, allow_pickle=False) as archive:
    return {name: archive[name] for name in archive.files}


def _rewrite(path, members):
  buffer = io.BytesIO()
  np.savez(buffer, **members)
  with open(path, 'wb') as f:
    f.write(buffer.getvalue())


def test_bad_files_are_clear_errors(tmp_path):
  _, index = _index()
  good = str(tmp_path / 'good.idx')
  index_lib.save_index(good, index)
  data = open(good, 'rb').read()

  with pytest.raises(index_lib.IndexFileError, match='does not exist'):
    index_lib.load_index(str(tmp_path / 'missing.idx'))
  not_zip = tmp_path / 'text.idx'
  not_zip.write_text('hello')
  with pytest.raises(index_lib.IndexFileError,
                     match=r'is not an aah index: not a .npz \(zip\) archive'):
    index_lib.load_index(str(not_zip))
  truncated = tmp_path / 'truncated.idx'
  truncated.write_bytes(data[:len(data) // 2])
  with pytest.raises(index_lib.IndexFileError, match='cannot be read'):
    index_lib.load_index(str(truncated))
  flipped = bytearray(data)  # a flipped bit inside the stored codes: zip's CRC catches it
  start = data.index(index.codes.words.tobytes()[:16])
  flipped[start + 3] ^= 0x10
  (tmp_path / 'flipped.idx').write_bytes(bytes(flipped))
  with pytest.raises(index_lib.IndexFileError, match='corrupted'):
    index_lib.load_index(str(tmp_path / 'flipped.idx'))

  members = _members(good)  # consistent zip, altered codes: the checksum catches it
  members['words'] = members['words'].copy()
  members['words'][0, 0] ^= 1
  _rewrite(str(tmp_path / 'altered.idx'), members)
  with pytest.raises(index_lib.IndexFileError, match='do not match its checksum'):
    index_lib.load_index(str(tmp_path / 'altered.idx'))

  members = _members(good)
  header = json.loads(members['header'].tobytes())
  header['version'] = 99
  members['header'] = np.frombuffer(json.dumps(header).encode(), np.uint8)
  _rewrite(str(tmp_path / 'future.idx'), members)
  with pytest.raises(index_lib.IndexFileError, match='version 99'):
    index_lib.load_index(str(tmp_path / 'future.idx'))

  members = _members(good)
  del members['ids']
  _rewrite(str(tmp_path / 'partial.idx'), members)
  with pytest.raises(index_lib.IndexFileError, match="lacks \\['ids'\\]"):
    index_lib.load_index(str(tmp_path / 'partial.idx'))
  with zipfile.ZipFile(good) as archive:
    assert sorted(archive.namelist()) == sorted(
        f'{m}.npy' for m in ('header', 'words', 'labels', 'ids', 'path_bytes', 'path_offsets'))


def test_fingerprint_tells_networks_apart():
  variables = {'params': {'w': np.ones((3, 2), np.float32)}, 'batch_stats': {}}
  same = {'params': {'w': np.ones((3, 2), np.float32)}, 'batch_stats': {}}
  other = {'params': {'w': np.ones((3, 2), np.float32) * 1.0001}, 'batch_stats': {}}
  assert index_lib.model_fingerprint(variables) == index_lib.model_fingerprint(same)
  assert index_lib.model_fingerprint(variables) != index_lib.model_fingerprint(other)


def test_build_index_checks_lengths():
  with pytest.raises(ValueError, match='5 codes but 4 labels'):
    index_lib.build_index(np.ones((5, 8)), labels=[0, 1, 2, 3])


def test_a_file_name_that_is_not_utf8_round_trips_and_opens(tmp_path):
  """Such names reach Python as surrogate escapes: the index keeps their bytes, so the path
  it gives back opens the same file (it used to fail with UnicodeEncodeError on saving)."""
  raw = os.path.join(os.fsencode(str(tmp_path)), b'caf\xe9.png')
  with open(raw, 'wb') as f:
    f.write(b'picture')
  name = os.fsdecode(raw)
  index = index_lib.build_index(np.ones((1, 8)), paths=[name])
  index_lib.save_index(str(tmp_path / 'codes.idx'), index)
  loaded = index_lib.load_index(str(tmp_path / 'codes.idx'))
  assert loaded.paths[0] == name
  with open(loaded.paths[0], 'rb') as f:
    assert f.read() == b'picture'
