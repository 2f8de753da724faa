"""The embedded synthetic dataset and the input pipeline."""

import hashlib
import tempfile

import numpy as np
import pytest

from aah_jax.common import normalization
from aah_jax.data import datasets, input_pipeline
from aah_jax.data.datasets import bird_renderer, dataset_entry, load_builder
from tolerances import EPS32


def _record_digests(builder):
  root = builder.data_path
  return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.iterdir()) if 'array_record' in p.name}


@pytest.fixture(scope='module')
def tiny_builder(tmp_path_factory):
  return load_builder('synthetic_birds', 'tiny', str(tmp_path_factory.mktemp('tfds')))


def test_builder_is_deterministic(tiny_builder, tmp_path):
  again = load_builder('synthetic_birds', 'tiny', str(tmp_path))
  first, second = _record_digests(tiny_builder), _record_digests(again)
  assert len(first) == 2 and first == second


def test_a_run_started_beside_another_uses_the_dataset_the_other_built_meanwhile(
    tiny_builder, tmp_path, monkeypatch):
  """Two runs started at once on a fresh machine both find the embedded dataset missing and
  both build it; the one that finishes second cannot rename its folder into place. It must
  go on with the first one's (identical) files, and leave no partial folder behind."""
  generate = datasets.AahSyntheticBirds._download_and_prepare
  raced = []

  def generate_while_another_process_finishes_first(builder, *args, **kwargs):
    if not raced:
      raced.append(True)
      datasets.prepare(datasets.make_builder('synthetic_birds', 'tiny', str(tmp_path)))
    return generate(builder, *args, **kwargs)

  monkeypatch.setattr(datasets.AahSyntheticBirds, '_download_and_prepare',
                      generate_while_another_process_finishes_first)
  builder = load_builder('synthetic_birds', 'tiny', str(tmp_path))
  assert raced and builder.is_prepared()
  assert _record_digests(builder) == _record_digests(tiny_builder)
  assert [p.name for p in builder.data_path.parent.iterdir()] == [builder.data_path.name]


@pytest.mark.parametrize('name', sorted(datasets.DATASETS))
def test_making_a_builder_for_an_unprepared_dataset_leaves_no_temporary_folder(
    name, tmp_path, monkeypatch):
  """tfds's DatasetInfo makes an empty mkdtemp('tfds') folder each time a builder is made
  for a dataset not yet prepared (to look for pre-computed info on GCS) and leaves it; ours
  look for none. Every registered builder, made for an empty data_dir."""
  temporary = tmp_path / 'tmp'
  temporary.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(temporary))
  folder = tmp_path / 'images'
  (folder / 'a').mkdir(parents=True)
  builder = datasets.make_builder(name, data_dir=str(tmp_path / 'tfds'), manual_dir=(
      str(folder) if name == 'image_folder' else None))
  assert not builder.is_prepared() and builder.info.features is not None
  assert list(temporary.iterdir()) == []


def test_splits_labels_and_attributes(tiny_builder):
  train = tiny_builder.as_data_source('train')
  test = tiny_builder.as_data_source('test')
  assert (len(train), len(test)) == (960, 240)
  metadata = tiny_builder.info.metadata
  class_attributes = np.array(metadata['class_attributes'])
  assert class_attributes.shape == (48, 6)
  for source in (train, test):
    for i in range(0, len(source), 37):
      example = source[i]
      assert example['image'].shape == (32, 32, 3) and example['image'].dtype == np.uint8
      np.testing.assert_array_equal(example['attributes'], class_attributes[example['label']])
  labels = datasets.read_labels(tiny_builder, 'train')
  assert np.bincount(labels).tolist() == [20] * 48
  np.testing.assert_array_equal(labels[::37], [train[i]['label'] for i in range(0, 960, 37)])


@pytest.mark.parametrize('num_classes', [48, 64])
def test_classes_are_unique_attribute_combinations_with_close_neighbours(num_classes):
  classes = bird_renderer.choose_classes(num_classes, seed=0)
  assert len({tuple(c) for c in classes}) == num_classes
  assert all(len(set(classes[:, a])) == len(values)
             for a, (_, values) in enumerate(bird_renderer.ATTRIBUTES))
  one_apart = sum(any(np.sum(a != b) == 1 for b in classes) for a in classes)
  assert one_apart >= 0.75 * num_classes  # fine-grained: most classes have a one-attribute twin


def test_images_vary_within_a_class():
  attributes = bird_renderer.choose_classes(48, 0)[0]
  images = np.stack([bird_renderer.render(attributes, [0, 0, i], 32) for i in range(8)])
  assert images.std(axis=0).mean() > 30  # pose, background, lighting differ
  np.testing.assert_array_equal(bird_renderer.render(attributes, [0, 0, 3], 32), images[3])


def test_unknown_dataset_is_a_clear_error():
  with pytest.raises(ValueError, match="'cub'"):
    dataset_entry('cub')


def test_local_slices_are_disjoint_and_cover_each_global_batch():
  order = np.random.default_rng(0).permutation(48)
  slices = [input_pipeline.local_slice(order, 16, p, 4) for p in range(4)]
  for b in range(3):
    parts = [s[b * 4:(b + 1) * 4] for s in slices]
    np.testing.assert_array_equal(np.concatenate(parts), order[b * 16:(b + 1) * 16])


def test_train_epoch_reads_omega_once_per_epoch(tiny_builder):
  source = tiny_builder.as_data_source('train')
  omega = np.random.default_rng(0).permutation(len(source))[:64]
  order = np.random.default_rng(1).permutation(64)
  batches = list(input_pipeline.train_epoch(source, omega, order, global_batch=16, image_size=32,
                                            crop_scale=(0.25, 1.0), seed=5))
  assert len(batches) == 4
  positions = np.concatenate([b['position'] for b in batches])
  np.testing.assert_array_equal(positions, order)
  np.testing.assert_array_equal(np.concatenate([b['index'] for b in batches]), omega[order])
  labels = datasets.read_labels(tiny_builder, 'train')
  np.testing.assert_array_equal(np.concatenate([b['label'] for b in batches]), labels[omega[order]])
  assert batches[0]['image'].shape == (16, 32, 32, 3) and batches[0]['image'].dtype == np.float32
  again = list(input_pipeline.train_epoch(source, omega, order, global_batch=16, image_size=32,
                                          crop_scale=(0.25, 1.0), seed=5))
  np.testing.assert_array_equal(batches[2]['image'], again[2]['image'])  # seeded augmentation


def test_eval_batches_pad_and_mask_the_last_batch(tiny_builder):
  source = tiny_builder.as_data_source('test')
  reads = []

  class Counted:
    def __len__(self):
      return len(source)

    def __getitem__(self, i):
      reads.append(i)
      return source[i]

  batches = list(input_pipeline.eval_batches(Counted(), global_batch=100, image_size=32,
                                             num_threads=1))
  assert len(batches) == 3
  mask = np.concatenate([b['mask'] for b in batches])
  index = np.concatenate([b['index'] for b in batches])
  np.testing.assert_array_equal(index[mask], np.arange(240))
  assert mask.sum() == 240 and not mask[240:].any()
  # Each example is decoded once; the 60 padding rows take the labels of one already read
  # (they used to re-read item 0 each: a large query image decoded 60 more times).
  assert sorted(reads) == list(range(240))


def test_transforms_keep_shape_and_normalise():
  image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
  crop = input_pipeline.random_resized_crop(image, np.random.default_rng(1), 32)
  assert crop.shape == (32, 32, 3)
  view = input_pipeline.resize_center_crop(image, 32)
  assert view.shape == (32, 32, 3)
  x = input_pipeline.normalize(image)
  # Five float32 roundings (÷255, −mean, ÷std, ·std, +mean), each ≤ eps/2 of a value of
  # magnitude < 2.7 (normalised: (1 − 0.406)/0.225 = 2.64), the last ones scaled by std < 1.
  np.testing.assert_allclose(normalization.to_unit_range(x), image / 255.0, rtol=0,
                             atol=5 * 2.7 * EPS32 / 2)


def test_two_processes_read_disjoint_slices_that_cover_every_batch(tiny_builder):
  """Training and evaluation batches of process 0 and 1 of 2: disjoint halves of each global
  batch; together, every example of the epoch or split exactly once (padding masked)."""
  source = tiny_builder.as_data_source('test')  # 240 items
  omega = np.random.default_rng(2).permutation(960)[:64]
  order = np.random.default_rng(3).permutation(64)
  train = [list(input_pipeline.train_epoch(tiny_builder.as_data_source('train'), omega, order,
                                           global_batch=16, image_size=32, crop_scale=(0.25, 1.0),
                                           seed=1, process_index=p, process_count=2))
           for p in range(2)]
  for b in range(4):
    halves = [train[p][b]['position'] for p in range(2)]
    assert len(halves[0]) == len(halves[1]) == 8 and not set(halves[0]) & set(halves[1])
    np.testing.assert_array_equal(np.concatenate(halves), order[b * 16:(b + 1) * 16])
  evaluation = [list(input_pipeline.eval_batches(source, global_batch=100, image_size=32,
                                                 process_index=p, process_count=2))
                for p in range(2)]
  seen = []
  for b in range(3):
    for p in range(2):
      batch = evaluation[p][b]
      assert len(batch['index']) == 50
      seen += batch['index'][batch['mask']].tolist()
  assert seen == list(range(240))


def test_bfloat16_images_on_request(tiny_builder):
  source = tiny_builder.as_data_source('test')
  batch = next(input_pipeline.eval_batches(source, global_batch=8, image_size=32,
                                           dtype=input_pipeline.IMAGE_DTYPES['bfloat16']))
  reference = next(input_pipeline.eval_batches(source, global_batch=8, image_size=32))
  assert batch['image'].dtype == input_pipeline.IMAGE_DTYPES['bfloat16']
  # bf16 keeps 8 significant bits: one rounding ≤ 2⁻⁸ relative, of normalised values < 2.7.
  np.testing.assert_allclose(batch['image'].astype(np.float32), reference['image'], rtol=0,
                             atol=2.7 * 2.0 ** -8)
