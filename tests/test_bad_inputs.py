"""Bad inputs to every command-line tool, table-driven: each is refused with a non-zero exit
and a message naming the culprit, before any compute, and nothing in the folders it was
pointed at is created or changed (every file's hash before and after)."""

import hashlib
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# (name, module, arguments, fragment of stderr); {t} is the case's folder, which holds an
# empty run folder 'run/', a picture 'query.png' and random bytes as 'random.pth',
# 'random.safetensors' and 'random.npz'.
CASES = [
    ('eval: topk 0', 'aah_jax.cli.aah_eval', ['--workdir={t}/run', '--topk=0'],
     '--topk=0'),
    ('eval: precision_ks not numbers', 'aah_jax.cli.aah_eval',
     ['--workdir={t}/run', '--precision_ks=abc'], '--precision_ks: positive integers'),
    ('eval: missing workdir', 'aah_jax.cli.aah_eval', ['--workdir={t}/nothing'],
     '--workdir={t}/nothing: no such folder'),
    ('eval: negative step', 'aah_jax.cli.aah_eval', ['--workdir={t}/run', '--step=-1'],
     '--step=-1'),
    ('explain: images_per_side -2', 'aah_jax.cli.aah_explain',
     ['--workdir={t}/run', '--images_per_side=-2'], '--images_per_side=-2'),
    ('index: out is a folder', 'aah_jax.cli.aah_index', ['--workdir={t}/run', '--out={t}/run'],
     '--out={t}/run is a folder'),
    ('index: out in a missing folder', 'aah_jax.cli.aah_index',
     ['--workdir={t}/run', '--out={t}/nothing/db.idx'], 'the folder {t}/nothing does not exist'),
    ('search: k 0', 'aah_jax.cli.aah_search',
     ['--workdir={t}/run', '--index={t}/db.idx', '--k=0', '{t}/query.png'], '--k=0'),
    ('search: k -1', 'aah_jax.cli.aah_search',
     ['--workdir={t}/run', '--index={t}/db.idx', '--k=-1', '{t}/query.png'], '--k=-1'),
    ('search: gallery in a missing folder', 'aah_jax.cli.aah_search',
     ['--workdir={t}/run', '--index={t}/db.idx', '--gallery={t}/nothing/g.png',
      '{t}/query.png'], 'the folder {t}/nothing does not exist'),
    ('search: a picture as the index', 'aah_jax.cli.aah_search',
     ['--workdir={t}/run', '--index={t}/query.png', '{t}/query.png'],
     '{t}/query.png is not an aah index: not a .npz (zip) archive'),
    ('search: an image over the pixel limit', 'aah_jax.cli.aah_search',
     ['--workdir={t}/run', '--index={t}/query.png', '--max_image_pixels=100',
      '{t}/query.png'], '--max_image_pixels'),
    ('convert: random .pth', 'aah_jax.cli.aah_convert',
     ['--src={t}/random.pth', '--arch=resnet18', '--out={t}/out.npz'],
     '{t}/random.pth is not a PyTorch state dict'),
    ('convert: random .safetensors', 'aah_jax.cli.aah_convert',
     ['--src={t}/random.safetensors', '--arch=resnet18', '--out={t}/out.npz'],
     '{t}/random.safetensors is not a safetensors state dict'),
    ('convert: random .npz', 'aah_jax.cli.aah_convert',
     ['--src={t}/random.npz', '--arch=resnet18', '--out={t}/out.npz'],
     '{t}/random.npz is not an .npz state dict'),
    ('prepare: a folder without class folders', 'aah_jax.prepare',
     ['--dataset=image_folder', '--manual_dir={t}/run', '--data_dir={t}/data'],
     'has no class folders: expected'),
    ('train: bits 0', 'aah_jax.main',
     ['--config=configs/tiny.py', '--workdir={t}/run', '--config.bits=0'],
     'config.bits=0: must be an integer ≥ 1'),
    ('train: image dtype float16', 'aah_jax.main',
     ['--config=configs/tiny.py', '--workdir={t}/run', '--config.data.image_dtype=float16'],
     "config.data.image_dtype='float16': must be one of"),
]


def _snapshot(root: pathlib.Path) -> dict:
  return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                     if p.is_file() else 'folder')
          for p in sorted(root.rglob('*'))}


@pytest.mark.parametrize('name,module,arguments,fragment', CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_named_and_changes_nothing(tmp_path, name, module, arguments,
                                                  fragment):
  del name
  (tmp_path / 'run').mkdir()
  Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / 'query.png')
  noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
  for suffix in ('pth', 'safetensors', 'npz'):
    (tmp_path / f'random.{suffix}').write_bytes(noise)
  if module == 'aah_jax.prepare':  # a flat folder: images but no class folders
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / 'run' / 'flat.png')
  before = _snapshot(tmp_path)
  result = subprocess.run([sys.executable, '-m', module,
                           *(a.format(t=tmp_path) for a in arguments)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'TFDS_DATA_DIR': str(tmp_path / 'data')})
  assert result.returncode != 0, result.stdout[-2000:]
  assert fragment.format(t=tmp_path) in result.stderr, result.stderr[-3000:]
  assert 'weights_only=False' not in result.stderr and 'allow_pickle' not in result.stderr
  assert _snapshot(tmp_path) == before  # nothing created, nothing changed
