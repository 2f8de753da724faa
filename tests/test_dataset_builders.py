"""Every dataset builder, built from a small fake copy of its official files written here."""

import io
import json
import os
import pathlib
import pickle
import tarfile

import numpy as np
from PIL import Image
import pytest
import scipy.io

from aah_jax.data import datasets
from aah_jax.data.datasets.generic import AahCifar10


def _image(path, value, size=(24, 20)):
  """A small JPEG whose pixels encode value (recognisable after decoding)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path, quality=95)


def _write(path, lines):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join(f'{line}\n' for line in lines))


def _build(name, manual_dir, data_dir, builder_config=None, skip_corrupt=False):
  builder = datasets.make_builder(name, builder_config, str(data_dir), str(manual_dir))
  datasets.prepare(builder, str(manual_dir), skip_corrupt=skip_corrupt)
  return builder


def _by_file(builder, split):
  """file_name → example of a split."""
  source = builder.as_data_source(split)
  return {source[i]['file_name'].decode() if isinstance(source[i]['file_name'], bytes)
          else source[i]['file_name']: source[i] for i in range(len(source))}


def _fake_cub(root):
  """3 classes × 3 images (ids 1–9): ids 1, 4, 7 are test images."""
  base = root / 'CUB_200_2011'
  images, labels, split, boxes, attributes = [], [], [], [], []
  for i in range(1, 10):
    label = (i - 1) // 3 + 1
    path = f'{label:03d}.Bird_{label}/Bird_{label}_{i}.jpg'
    _image(base / 'images' / path, 20 * i)
    images.append(f'{i} {path}')
    labels.append(f'{i} {label}')
    split.append(f'{i} {0 if i % 3 == 1 else 1}')
    boxes.append(f'{i} {i}.0 2.0 10.0 {i + 3}.0')
    attributes += [f'{i} {a} {int((i + a) % 4 == 0)} 3 10.5' for a in range(1, 313)]
  _write(base / 'images.txt', images)
  _write(base / 'image_class_labels.txt', labels)
  _write(base / 'train_test_split.txt', split)
  _write(base / 'bounding_boxes.txt', boxes)
  _write(base / 'classes.txt', [f'{c} {c:03d}.Bird_{c}' for c in range(1, 4)])
  _write(base / 'attributes' / 'image_attribute_labels.txt', attributes)
  _write(root / 'attributes.txt', [f'{a} has_part::{a}' for a in range(1, 313)])


def test_cub200_from_the_official_tgz(tmp_path):
  source = tmp_path / 'source'
  _fake_cub(source)
  manual = tmp_path / 'manual'
  manual.mkdir()
  with tarfile.open(manual / 'CUB_200_2011.tgz', 'w:gz') as tar:  # the archive, as distributed
    tar.add(source / 'CUB_200_2011', 'CUB_200_2011')
    tar.add(source / 'attributes.txt', 'attributes.txt')
  builder = _build('cub200', manual, tmp_path / 'data')
  train, test = _by_file(builder, 'train'), _by_file(builder, 'test')
  assert (len(train), len(test)) == (6, 3)
  assert sorted(test) == ['001.Bird_1/Bird_1_1.jpg', '002.Bird_2/Bird_2_4.jpg',
                          '003.Bird_3/Bird_3_7.jpg']
  for i in range(1, 10):
    label = (i - 1) // 3 + 1
    example = (test if i % 3 == 1 else train)[f'{label:03d}.Bird_{label}/Bird_{label}_{i}.jpg']
    assert example['label'] == label - 1
    # The right picture: a flat grey survives JPEG within ±1 level (DC quantisation ≤ ½ level,
    # YCbCr rounding ±½), and the nine pictures are 20 levels apart.
    assert abs(int(example['image'].mean()) - 20 * i) <= 2
    expected = [int((i + a) % 4 == 0) for a in range(1, 313)]
    np.testing.assert_array_equal(example['attributes'], expected)
    np.testing.assert_array_equal(example['bbox'], [i, 2, 10, i + 3])  # small integers: exact
  metadata = builder.info.metadata
  assert metadata['class_names'][2] == '003.Bird_3' and metadata['attribute_names'][0] == 'has_part::1'
  assert datasets.read_labels(builder, 'train').tolist() == [
      train[name]['label'] for name in sorted(train, key=lambda n: list(train).index(n))]


def _fake_aircraft(root):
  base = root / 'fgvc-aircraft-2013b' / 'data'
  variants = ['707-320', 'A300B4', 'Cessna 172']  # names with spaces
  _write(base / 'variants.txt', variants)
  trainval, test = [], []
  for i in range(6):
    image_id = f'{1000000 + i}'
    _image(base / 'images' / f'{image_id}.jpg', 30 * i + 10, size=(40, 50))
    (test if i >= 4 else trainval).append(f'{image_id} {variants[i % 3]}')
  _write(base / 'images_variant_trainval.txt', trainval)
  _write(base / 'images_variant_test.txt', test)


@pytest.mark.parametrize('config,height', [('default', 50), ('crop_banner', 30)])
def test_aircraft_variants_and_banner_crop(tmp_path, config, height):
  _fake_aircraft(tmp_path / 'manual')
  builder = _build('aircraft', tmp_path / 'manual', tmp_path / 'data', config)
  train, test = _by_file(builder, 'train'), _by_file(builder, 'test')
  assert (len(train), len(test)) == (4, 2)
  example = test['data/images/1000005.jpg']
  assert example['label'] == 2 and example['image'].shape == (height, 40, 3)
  assert builder.info.metadata['class_names'][2] == 'Cessna 172'


def _fake_food101(root, classes=('apple_pie', 'baklava')):
  base = root / 'food-101'
  _write(base / 'meta' / 'classes.txt', classes)
  train, test = [], []
  for c, name in enumerate(classes):
    for i in range(3):
      _image(base / 'images' / name / f'{c}{i}.jpg', 40 * c + 10 * i + 5)
      (test if i == 2 else train).append(f'{name}/{c}{i}')
  _write(base / 'meta' / 'train.txt', train)
  _write(base / 'meta' / 'test.txt', test)
  return base


def test_food101_and_corrupt_or_missing_images(tmp_path):
  base = _fake_food101(tmp_path / 'manual')
  builder = _build('food101', tmp_path / 'manual', tmp_path / 'data')
  train, test = _by_file(builder, 'train'), _by_file(builder, 'test')
  assert sorted(test) == ['images/apple_pie/02.jpg', 'images/baklava/12.jpg']
  assert [train[f'images/baklava/1{i}.jpg']['label'] for i in range(2)] == [1, 1]

  corrupt = base / 'images' / 'baklava' / '11.jpg'
  corrupt.write_bytes(b'\xff\xd8 not really a jpeg')
  with pytest.raises(datasets.CorruptImageError, match=str(corrupt)):
    _build('food101', tmp_path / 'manual', tmp_path / 'data2')
  skipped = _build('food101', tmp_path / 'manual', tmp_path / 'data3', skip_corrupt=True)
  assert skipped.info.splits['train'].num_examples == 3
  assert skipped.info.metadata['skipped_files'] == [str(corrupt)]
  reloaded = datasets.load_builder('food101', None, str(tmp_path / 'data3'))
  assert reloaded.info.metadata['skipped_files'] == [str(corrupt)]  # kept with the dataset

  corrupt.unlink()
  with pytest.raises(datasets.DatasetFilesError, match='11.jpg'):
    _build('food101', tmp_path / 'manual', tmp_path / 'data4')


def test_nabirds_remaps_leaf_classes(tmp_path):
  base = tmp_path / 'manual' / 'nabirds'
  raw_ids = [817, 295, 1000, 295, 817, 1000]
  _write(base / 'images.txt', [f'id{i} {i // 2:04d}/img{i}.jpg' for i in range(6)])
  for i in range(6):
    _image(base / 'images' / f'{i // 2:04d}' / f'img{i}.jpg', 30 * i)
  _write(base / 'image_class_labels.txt', [f'id{i} {c}' for i, c in enumerate(raw_ids)])
  _write(base / 'train_test_split.txt', [f'id{i} {int(i < 4)}' for i in range(6)])
  _write(base / 'classes.txt', ['295 Sparrow', '817 Finch', '1000 Robin', '1 Birds'])
  builder = _build('nabirds', tmp_path / 'manual', tmp_path / 'data')
  train, test = _by_file(builder, 'train'), _by_file(builder, 'test')
  assert (len(train), len(test)) == (4, 2)
  remap = {295: 0, 817: 1, 1000: 2}
  for i, raw in enumerate(raw_ids):
    assert (train if i < 4 else test)[f'{i // 2:04d}/img{i}.jpg']['label'] == remap[raw]
  assert builder.info.metadata['class_names'] == ['Sparrow', 'Finch', 'Robin']


def test_vegfru_lists(tmp_path):
  base = tmp_path / 'manual' / 'vegfru'
  rows = {'train': [], 'test': []}
  for i in range(5):
    path = f'{"veg200" if i < 3 else "fru92"}_images/kind{i}/v{i}.jpg'
    _image(base / path, 40 * i)
    rows['test' if i == 4 else 'train'].append(f'{path} {i * 50}')
  for split, lines in rows.items():
    _write(base / 'vegfru_list' / f'vegfru_{split}.txt', lines)
  builder = _build('vegfru', tmp_path / 'manual', tmp_path / 'data')
  train, test = _by_file(builder, 'train'), _by_file(builder, 'test')
  assert train['fru92_images/kind3/v3.jpg']['label'] == 150
  assert test['fru92_images/kind4/v4.jpg']['label'] == 200


def test_stanford_dogs_from_mat_lists(tmp_path):
  base = tmp_path / 'manual' / 'stanford_dogs'
  breeds = ['n02085620-Chihuahua', 'n02085782-Japanese_spaniel']
  files = {'train': [], 'test': []}
  for b, breed in enumerate(breeds):
    for i in range(3):
      name = f'{breed}/{breed.split("-")[0]}_{i}.jpg'
      _image(base / 'Images' / name, 50 * b + 10 * i)
      files['test' if i == 2 else 'train'].append((name, b + 1))
  for split, entries in files.items():
    file_list = np.empty((len(entries), 1), dtype=object)
    for row, (name, _) in enumerate(entries):
      file_list[row, 0] = np.array([name])
    scipy.io.savemat(base / f'{split}_list.mat', {
        'file_list': file_list, 'labels': np.array([[label] for _, label in entries], float)})
  builder = _build('stanford_dogs', tmp_path / 'manual', tmp_path / 'data')
  train, test = _by_file(builder, 'train'), _by_file(builder, 'test')
  assert (len(train), len(test)) == (4, 2)
  assert test['Images/n02085782-Japanese_spaniel/n02085782_2.jpg']['label'] == 1
  assert train['Images/n02085620-Chihuahua/n02085620_1.jpg']['label'] == 0
  assert builder.info.metadata['class_names'] == ['Chihuahua', 'Japanese_spaniel']


def test_cifar10_hashing_protocol_split(tmp_path):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(10), 110)  # 1,100 images: 1,000 queries + 100 database
  rng.shuffle(labels)
  data = rng.integers(0, 256, (1100, 3072), dtype=np.uint8)
  data[:, 0] = np.arange(1100) % 256  # the first red pixel tells images apart
  manual = tmp_path / 'manual'
  manual.mkdir()
  chunks = np.array_split(np.arange(1100), 6)
  with tarfile.open(manual / 'cifar-10-python.tar.gz', 'w:gz') as tar:
    for name, rows in zip([f'data_batch_{i}' for i in range(1, 6)] + ['test_batch'], chunks):
      payload = pickle.dumps({b'data': data[rows], b'labels': labels[rows].tolist()})
      info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  builder = _build('cifar10', manual, tmp_path / 'data')
  queries = AahCifar10.query_indices(labels)
  assert len(queries) == 1000 and np.bincount(labels[queries]).tolist() == [100] * 10
  assert builder.info.metadata['query_indices'] == queries.tolist()
  query, database = _by_file(builder, 'query'), _by_file(builder, 'database')
  assert (len(query), len(database)) == (1000, 100)
  names = [f'{n}[{i}]' for n, rows in zip([f'data_batch_{i}' for i in range(1, 6)] +
                                          ['test_batch'], chunks) for i in range(len(rows))]
  assert sorted(query) == sorted(names[q] for q in queries)
  for q in queries[:20]:
    example = query[names[q]]
    assert example['label'] == labels[q] and example['image'][0, 0, 0] == q % 256


def test_nuswide_multi_hot_lists(tmp_path):
  base = tmp_path / 'manual' / 'nuswide'
  rng = np.random.default_rng(1)
  rows = {'database': [], 'test': []}
  expected = {}
  for i in range(6):
    path = f'images/{i}.jpg'
    _image(base / path, 30 * i)
    vector = (rng.random(21) < 0.3).astype(int)
    expected[path] = vector
    rows['test' if i >= 4 else 'database'].append(f'{path} ' + ' '.join(map(str, vector)))
  for split, lines in rows.items():
    _write(base / f'{split}.txt', lines)
  builder = _build('nuswide', tmp_path / 'manual', tmp_path / 'data')
  for split in ('database', 'test'):
    for name, example in _by_file(builder, split).items():
      np.testing.assert_array_equal(example['label'], expected[name])
  assert datasets.read_labels(builder, 'database').shape == (4, 21)
  _write(base / 'test.txt', ['images/0.jpg 1 0 1'])
  with pytest.raises(datasets.DatasetFilesError, match='21 labels'):
    _build('nuswide', tmp_path / 'manual', tmp_path / 'data2')


@pytest.mark.parametrize('with_split_folders', [False, True])
def test_image_folder(tmp_path, with_split_folders):
  root = tmp_path / 'mine'
  for c, name in enumerate(['cats', 'dogs']):
    for i in range(5):
      split = ('test' if i == 4 else 'train') if with_split_folders else ''
      _image(root / split / name / f'{i}.png', 40 * c + 5 * i)
  builder = _build('image_folder', root, tmp_path / 'data')
  train, test = _by_file(builder, 'train'), _by_file(builder, 'test')
  assert (len(train), len(test)) == (8, 2)
  assert {example['label'] for name, example in test.items() if 'dogs' in name} == {1}
  assert all(example['label'] == ('dogs' in name) for name, example in train.items())
  again = datasets.load_builder('image_folder', None, str(tmp_path / 'data'), str(root))
  assert sorted(_by_file(again, 'test')) == sorted(test)  # the same seeded split


def test_image_folder_layout_errors_say_what_is_expected(tmp_path, caplog):
  flat = tmp_path / 'flat'  # images but no class folders
  for i in range(3):
    _image(flat / f'{i}.png', 10 * i)
  with pytest.raises(datasets.DatasetFilesError,
                     match=r'has no class folders: expected .*/<class>/<image>'):
    _build('image_folder', flat, tmp_path / 'data1')
  few = tmp_path / 'few'  # 2 images per class: round(2 · 0.2) = 0 queries
  for c in ('a', 'b'):
    for i in range(2):
      _image(few / c / f'{i}.png', 10 * i)
  with pytest.raises(datasets.DatasetFilesError,
                     match=r"test split .* would be empty: a class needs at least 3 images .*"
                           r"class 'a' has 2"):
    _build('image_folder', few, tmp_path / 'data2')
  one = tmp_path / 'one'
  for i in range(5):
    _image(one / 'only' / f'{i}.png', 10 * i)
  _build('image_folder', one, tmp_path / 'data3')
  assert 'one class only (only)' in caplog.text


def test_a_file_name_that_is_not_utf8_is_kept(tmp_path):
  """A file whose name is not UTF-8 used to stop aah-prepare (UnicodeEncodeError on the
  file_name feature); it is kept, its undecodable bytes written as \\xNN."""
  root = tmp_path / 'mine'
  for c, name in enumerate(['cats', 'dogs']):
    for i in range(3):
      _image(root / name / f'{i}.png', 40 * c + 5 * i)
  odd = os.path.join(os.fsencode(str(root / 'dogs')), b'caf\xe9.png')
  Image.fromarray(np.full((20, 24, 3), 200, np.uint8)).save(os.fsdecode(odd), format='PNG')
  builder = _build('image_folder', root, tmp_path / 'data')
  names = {**_by_file(builder, 'train'), **_by_file(builder, 'test')}
  assert len(names) == 7 and 'dogs/caf\\xe9.png' in names
  assert names['dogs/caf\\xe9.png']['label'] == 1


def test_unprepared_dataset_names_the_command(tmp_path):
  with pytest.raises(FileNotFoundError, match='aah-prepare --dataset=cub200 --manual_dir'):
    datasets.load_builder('cub200', None, str(tmp_path))
  with pytest.raises(datasets.DatasetFilesError, match='CUB_200_2011'):
    _build('cub200', tmp_path, tmp_path / 'data')
  assert not os.path.exists(tmp_path / 'data' / 'aah_cub200' / '1.0.0' / 'dataset_info.json')


def _fake_inat2021(root):
  """3 species (ids 0–2; two genera of one family, a second family); train: 2 images each,
  train_mini: 1 each, val: 1 each. Each JSON as the release writes it (COCO-style)."""
  base = root / 'inat2021'
  taxa = [('Animalia', 'Chordata', 'Aves', 'Passeriformes', 'Meliphagidae', 'Ptilotula'),
          ('Animalia', 'Chordata', 'Aves', 'Passeriformes', 'Meliphagidae', 'Anthochaera'),
          ('Plantae', 'Tracheophyta', 'Magnoliopsida', 'Rosales', 'Rosaceae', 'Rosa')]
  categories = [dict(id=c, name=f'species {c}', common_name='', supercategory='x',
                     image_dir_name=f'{c:05d}_dir', specific_epithet='e',
                     **dict(zip(('kingdom', 'phylum', 'class', 'order', 'family', 'genus'), t)))
                for c, t in enumerate(taxa)]
  for split, per_species, folder in (('train', 2, 'train'), ('train_mini', 1, 'train_mini'),
                                     ('val', 1, 'val')):
    images, annotations = [], []
    for c in range(3):
      for j in range(per_species):
        image_id = 100 * c + j + (1000 if split == 'val' else 0)
        name = f'{folder}/{c:05d}_dir/{image_id}.jpg'
        _image(base / name, 40 * c + 10 * j + 5)
        images.append({'id': image_id, 'file_name': name, 'width': 24, 'height': 20})
        annotations.append({'id': image_id, 'image_id': image_id, 'category_id': c})
    (base / f'{split}.json').write_text(json.dumps(
        {'info': {}, 'images': images, 'annotations': annotations, 'categories': categories,
         'licenses': []}))
  return base


@pytest.mark.parametrize('config,train_size', [('default', 6), ('mini', 3)])
def test_inat2021_species_and_taxonomy_attributes(tmp_path, config, train_size):
  _fake_inat2021(tmp_path / 'manual')
  builder = _build('inat2021', tmp_path / 'manual', tmp_path / 'data', builder_config=config)
  entry = datasets.dataset_entry('inat2021')
  assert (entry.database_split, entry.query_split) == ('train', 'val')
  assert len(builder.as_data_source('train')) == train_size
  val = _by_file(builder, 'val')
  assert sorted(val) == [f'val/{c:05d}_dir/{1000 + 100 * c}.jpg' for c in range(3)]
  np.testing.assert_array_equal(datasets.read_labels(builder, 'val'),
                                [val[name]['label'] for name in val])
  assert sorted(int(e['label']) for e in val.values()) == [0, 1, 2]
  attributes, names, values = datasets.read_attributes(builder, 'train')
  assert names == ['kingdom', 'phylum', 'class', 'order', 'family', 'genus']
  assert values[0] == ['Animalia', 'Plantae'] and values[5] == ['Anthochaera', 'Ptilotula', 'Rosa']
  by_label = {int(l): tuple(a) for l, a in zip(datasets.read_labels(builder, 'train'), attributes)}
  assert by_label == {0: (0, 0, 0, 0, 0, 1), 1: (0, 0, 0, 0, 0, 0), 2: (1, 1, 1, 1, 1, 2)}
  assert builder.info.metadata['class_names'] == ['species 0', 'species 1', 'species 2']
  image = val['val/00002_dir/1200.jpg']['image']
  assert abs(int(np.asarray(image).mean()) - 85) <= 2  # the JPEG of value 40·2 + 5


def test_inat2021_files_that_do_not_fit_are_named(tmp_path):
  base = _fake_inat2021(tmp_path / 'manual')
  train = json.loads((base / 'train.json').read_text())
  train['annotations'] = train['annotations'][1:]  # image 0 loses its species
  (base / 'train.json').write_text(json.dumps(train))
  with pytest.raises(datasets.DatasetFilesError, match=r'train\.json: image 0 .* has no annotation'):
    _build('inat2021', tmp_path / 'manual', tmp_path / 'data')
  (base / 'val.json').write_text('{"images": [')
  with pytest.raises(datasets.DatasetFilesError, match=r'val\.json is not valid JSON'):
    _build('inat2021', tmp_path / 'manual', tmp_path / 'data2')
