"""The on-disk index of packed hash codes that aah-index writes and aah-search reads.

One file, a NumPy ``.npz`` archive (no pickles) with these members:
  header  JSON (as bytes): format "aah-index", version, bits, count, sha256, meta
  words   (N, ⌈bits/8⌉) uint8: the codes, bit 1 for +1 (``ranking.PackedCodes``)
  labels  (N,) int64 class ids (-1: unknown) or (N, L) uint8 multi-hot
  ids     (N,) int64: each item's index in its source split or folder listing
  path_bytes, path_offsets  uint8 UTF-8 text and (N + 1,) int64 offsets: item i's path
          is path_bytes[offsets[i]:offsets[i + 1]], a file path or "dataset:split[i]"
``sha256`` covers the five arrays (dtype, shape and bytes); ``meta`` records where the
codes come from (run workdir, checkpoint step, the network's fingerprint, the image
size, the dataset and split or folder, class names). A file is written to a temporary
name and renamed, so a failed write never leaves a partial index.
"""

import dataclasses
import hashlib
import io
import json
import os
import zipfile

import jax
import numpy as np

from aah_jax.retrieval import ranking

FORMAT = 'aah-index'
VERSION = 1
_MEMBERS = ('words', 'labels', 'ids', 'path_bytes', 'path_offsets')


class IndexFileError(ValueError):
  """An index file that is not one, is corrupted, or does not fit what it is used with."""


@dataclasses.dataclass(frozen=True)
class CodeIndex:
  """Packed database codes with what identifies each item."""

  codes: ranking.PackedCodes
  labels: np.ndarray
  ids: np.ndarray
  paths: np.ndarray
  meta: dict

  def __len__(self):
    return len(self.codes)

  @property
  def bits(self) -> int:
    return self.codes.bits

  def search(self, query_codes, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (distances, row indices) by (Hamming distance, row) for each query."""
    return ranking.search(query_codes, self.codes, k)


def build_index(codes, *, labels=None, ids=None, paths=None, meta=None) -> CodeIndex:
  """A CodeIndex from codes in any form ``ranking.as_pm1`` takes."""
  packed = codes if isinstance(codes, ranking.PackedCodes) else ranking.pack_codes(codes)
  n = len(packed)
  labels = np.full(n, -1, np.int64) if labels is None else np.asarray(labels)
  labels = labels.astype(np.int64) if labels.ndim == 1 else (labels > 0).astype(np.uint8)
  ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
  paths = np.asarray([''] * n if paths is None else [str(p) for p in paths], dtype=object)
  for name, array in (('labels', labels), ('ids', ids), ('paths', paths)):
    if len(array) != n:
      raise ValueError(f'{n} codes but {len(array)} {name}')
  return CodeIndex(packed, labels, ids, paths.reshape(n), dict(meta or {}))


def _encode_paths(paths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  # os.fsencode: a name that is not UTF-8 (held as surrogate escapes) keeps its bytes.
  encoded = [os.fsencode(str(p)) for p in paths]
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in encoded], dtype=np.int64)])
  return np.frombuffer(b''.join(encoded), np.uint8), offsets.astype(np.int64)


def _decode_paths(path_bytes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  text = path_bytes.tobytes()
  return np.asarray([os.fsdecode(text[a:b]) for a, b in zip(offsets[:-1], offsets[1:])],
                    dtype=object)


def _checksum(arrays: dict) -> str:
  digest = hashlib.sha256()
  for name in _MEMBERS:
    array = np.ascontiguousarray(arrays[name])
    digest.update(f'{name}:{array.dtype.str}:{array.shape};'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def save_index(path: str, index: CodeIndex):
  """Writes index to path (atomically: a temporary file, then a rename)."""
  path_bytes, path_offsets = _encode_paths(index.paths)
  arrays = {'words': index.codes.words, 'labels': index.labels, 'ids': index.ids,
            'path_bytes': path_bytes, 'path_offsets': path_offsets}
  header = {'format': FORMAT, 'version': VERSION, 'bits': index.bits, 'count': len(index),
            'sha256': _checksum(arrays), 'meta': index.meta}
  tmp = f'{path}.tmp'
  try:
    with open(tmp, 'wb') as f:
      np.savez(f, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load_index(path: str) -> CodeIndex:
  """Reads and verifies an index; IndexFileError says what is wrong with the file."""
  if not os.path.isfile(path):
    raise IndexFileError(f'index {path} does not exist')
  with open(path, 'rb') as f:
    data = f.read()
  if not data.startswith(b'PK'):  # numpy's own error would advise allow_pickle=True
    raise IndexFileError(f'{path} is not an aah index: not a .npz (zip) archive at all (it '
                         f'starts with {data[:8]!r})')
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
      members = {name: archive[name] for name in archive.files}
  except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
    raise IndexFileError(f'{path} cannot be read as an aah index (not one, truncated or '
                         f'corrupted): {error}') from None
  missing = [m for m in ('header',) + _MEMBERS if m not in members]
  if missing:
    raise IndexFileError(f'{path} is not an aah index file: it lacks {missing}')
  try:
    header = json.loads(members['header'].tobytes().decode())
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise IndexFileError(f'{path}: unreadable header ({error})') from None
  if header.get('format') != FORMAT:
    raise IndexFileError(f'{path} is not an aah index file (format {header.get("format")!r})')
  if header.get('version') != VERSION:
    raise IndexFileError(f'{path} is index format version {header.get("version")}; this '
                         f'aah_jax reads version {VERSION}: rebuild it with aah-index')
  if _checksum(members) != header['sha256']:
    raise IndexFileError(f'{path} is corrupted: its contents do not match its checksum')
  words, bits, count = members['words'], header['bits'], header['count']
  if words.dtype != np.uint8 or words.shape != (count, -(-bits // 8)):
    raise IndexFileError(f'{path}: codes of shape {words.shape} ({words.dtype}) do not hold '
                         f'{count} codes of {bits} bits')
  offsets = members['path_offsets']
  if (len(members['labels']) != count or len(members['ids']) != count
      or offsets.shape != (count + 1,) or offsets[-1] != len(members['path_bytes'])):
    raise IndexFileError(f'{path}: labels, ids or paths do not match its {count} codes')
  paths = _decode_paths(members['path_bytes'], offsets)
  return CodeIndex(ranking.PackedCodes(words, bits), members['labels'], members['ids'],
                   paths, header['meta'])


def model_fingerprint(variables) -> str:
  """A short hash of a network's variables: equal fingerprints, the same network."""
  digest = hashlib.sha256()
  for key_path, leaf in sorted(jax.tree_util.tree_flatten_with_path(variables)[0],
                               key=lambda item: jax.tree_util.keystr(item[0])):
    array = np.asarray(leaf)
    digest.update(f'{jax.tree_util.keystr(key_path)}:{array.dtype.str}:{array.shape};'.encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()[:16]
