"""aah-search: the nearest neighbours of query images in an index.

    aah-search --index=INDEX --workdir=RUN [--k=10] [--gallery=OUT.png] IMAGE [IMAGE ...]

Encodes the images (batched, sharded over all devices) with the network the index was
built with, and prints for each its top-k items by (Hamming distance, index order):
rank, distance, label and path. The index must come from the same network: its
fingerprint is checked against the run's checkpoint (``--step``, default the latest).
"""

import os

from absl import app, flags
import numpy as np

from aah_jax.cli import common
from aah_jax.data import datasets, image_decode, image_files, input_pipeline
from aah_jax.retrieval import gallery, index as index_lib
from aah_jax.retrieval.codes import hash_codes

FLAGS = flags.FLAGS
common.define_run_flags()
flags.DEFINE_integer('max_image_pixels', image_decode.DEFAULT_MAX_PIXELS, 'Largest image '
                     '(width × height) read; a larger one is an error naming the file.')
flags.DEFINE_string('index', None, 'The index file (from aah-index).')
flags.DEFINE_integer('k', 10, 'Neighbours per query.', lower_bound=1)
flags.DEFINE_string('gallery', None, 'Also write the queries and their neighbours as a PNG.')
flags.mark_flag_as_required('index')


def label_name(index: index_lib.CodeIndex, row: int) -> str:
  label = index.labels[row]
  if np.ndim(label):
    return ','.join(str(i) for i in np.flatnonzero(label))
  names = index.meta.get('class_names')
  return names[label] if names and 0 <= label < len(names) else str(int(label))


def item_image(index: index_lib.CodeIndex, row: int, config, sources: dict) -> np.ndarray:
  """The picture of an index item: its file, or its example in the dataset it came from."""
  if 'image_dir' in index.meta:
    return image_files.load_rgb(str(index.paths[row]))
  key = (index.meta['dataset'], index.meta['split'])
  if key not in sources:
    builder = datasets.load_builder(key[0], index.meta['builder_config'], config.data.data_dir,
                                    index.meta.get('manual_dir'))
    sources[key] = builder.as_data_source(key[1])
  return np.asarray(sources[key][int(index.ids[row])]['image'])


def check_same_network(index: index_lib.CodeIndex, fingerprint: str, step: int):
  built_with = index.meta.get('model_fingerprint')
  if built_with != fingerprint:
    raise index_lib.IndexFileError(
        f'{FLAGS.index} was encoded by another network (fingerprint {built_with}, step '
        f'{index.meta.get("step")} of {index.meta.get("workdir")}) than step {step} of '
        f'{FLAGS.workdir} (fingerprint {fingerprint}): codes of different networks are not '
        f'comparable. Pass the run and --step the index was built with, or rebuild it.')


def main(argv):
  image_decode.set_max_pixels(FLAGS.max_image_pixels)
  queries = argv[1:]
  if not queries:
    raise app.UsageError('give one or more query images')
  if FLAGS.gallery:
    common.check_output_file(FLAGS.gallery, '--gallery')
  image_files.check_readable(queries)
  index = index_lib.load_index(FLAGS.index)
  restored = common.restore_run(FLAGS.workdir, FLAGS.step, common.overrides_from_flags())
  check_same_network(index, index_lib.model_fingerprint(restored.variables), restored.step)
  # A large JPEG query is decoded at reduced scale, still ≥ 2× the evaluation view's side.
  min_side = 2 * input_pipeline.eval_short_side(restored.run.config.image_size)
  queries_source = image_files.ImageFiles(queries, min_side=min_side)
  codes = np.asarray(hash_codes(restored.run.encode(restored.variables, queries_source)))
  distances, rows = index.search(codes, FLAGS.k)
  for query, query_distances, query_rows in zip(queries, distances, rows):
    print(f'{image_files.printable_name(query)}:')
    for rank, (distance, row) in enumerate(zip(query_distances, query_rows), start=1):
      print(f'  {rank:3d}  distance {distance:3d}  label {label_name(index, row)}  '
            f'{image_files.printable_name(index.paths[row])}')
  if FLAGS.gallery:
    sources = {}
    name = lambda path: image_files.printable_name(os.path.basename(path))
    tiles = [(gallery.Tile(image_files.load_rgb(q), name(q)),
              [gallery.Tile(item_image(index, row, restored.run.config, sources),
                            f'd={d} {label_name(index, row)}')
               for d, row in zip(query_distances, query_rows)])
             for q, query_distances, query_rows in zip(queries, distances, rows)]
    gallery.render_gallery(tiles, FLAGS.gallery)
    print(f'gallery: {FLAGS.gallery}')


def run():
  app.run(main)


if __name__ == '__main__':
  run()
