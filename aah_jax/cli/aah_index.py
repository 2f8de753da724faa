"""aah-index: encode a dataset split or an image folder with a trained run into an index.

    aah-index --workdir=RUN --out=INDEX [--dataset=NAME] [--split=SPLIT]
    aah-index --workdir=RUN --out=INDEX --image_dir=DIR      (DIR/<class>/<image>)

The network of the run's checkpoint (``--step``, default the latest) encodes every
item with a jitted forward sharded over all devices; the codes are packed and written
with labels, ids and paths (``aah_jax.retrieval.index``). Default: the run's own database split.
"""

import os

from absl import app, flags
import jax
import numpy as np

from aah_jax.cli import common
from aah_jax.data import datasets, image_decode, image_files
from aah_jax.retrieval import index as index_lib
from aah_jax.retrieval.codes import hash_codes

FLAGS = flags.FLAGS
common.define_run_flags()
flags.DEFINE_integer('max_image_pixels', image_decode.DEFAULT_MAX_PIXELS, 'Largest image '
                     '(width × height) read; a larger one is an error naming the file.')
flags.DEFINE_string('out', None, 'The index file to write.')
flags.DEFINE_string('dataset', None, 'Dataset to encode (default: the run\'s).')
flags.DEFINE_string('split', None, 'Split to encode (default: the dataset\'s database split).')
flags.DEFINE_string('image_dir', None, 'Encode this folder of images instead of a dataset.')
flags.mark_flag_as_required('out')


def items_to_encode(config, *, dataset, split, image_dir):
  """(source, labels, ids, paths, meta) of what to encode; bad input fails here."""
  if image_dir:
    paths, labels, class_names = image_files.image_folder(image_dir)
    image_files.check_readable(paths)
    return (image_files.ImageFiles(paths, labels), labels, np.arange(len(paths)), paths,
            {'image_dir': os.path.abspath(image_dir), 'class_names': class_names})
  dataset = dataset or config.dataset
  split = split or datasets.dataset_entry(dataset).database_split
  builder = datasets.load_builder(dataset, config.data.builder_config, config.data.data_dir,
                                  config.data.manual_dir)
  if split not in builder.info.splits:
    raise ValueError(f'--split={split!r}: {dataset} has splits {sorted(builder.info.splits)}')
  source = builder.as_data_source(split)
  return (source, datasets.read_labels(builder, split), np.arange(len(source)),
          [f'{dataset}:{split}[{i}]' for i in range(len(source))],
          {'dataset': dataset, 'builder_config': config.data.builder_config, 'split': split,
           'manual_dir': config.data.manual_dir})


def main(argv):
  del argv
  image_decode.set_max_pixels(FLAGS.max_image_pixels)
  if FLAGS.image_dir and (FLAGS.dataset or FLAGS.split):
    raise app.UsageError('give either --image_dir or --dataset/--split, not both')
  common.check_output_file(FLAGS.out, '--out')
  config, _, _ = common.saved_config(FLAGS.workdir, FLAGS.step, common.overrides_from_flags())
  source, labels, ids, paths, meta = items_to_encode(
      config, dataset=FLAGS.dataset, split=FLAGS.split, image_dir=FLAGS.image_dir)
  restored = common.restore_run(FLAGS.workdir, FLAGS.step, common.overrides_from_flags())
  codes = np.asarray(hash_codes(restored.run.encode(restored.variables, source)))
  meta.update(workdir=os.path.abspath(FLAGS.workdir), step=restored.step,
              model_fingerprint=index_lib.model_fingerprint(restored.variables),
              image_size=int(config.image_size), bits=int(config.bits))
  index = index_lib.build_index(codes, labels=labels, ids=ids, paths=paths, meta=meta)
  if jax.process_index() == 0:
    index_lib.save_index(FLAGS.out, index)
    print(f'{FLAGS.out}: {len(index)} codes of {index.bits} bits '
          f'({os.path.getsize(FLAGS.out)} bytes), step {restored.step} of {FLAGS.workdir}')


def run():
  app.run(main)


if __name__ == '__main__':
  run()
