"""aah-prepare: build a dataset's tfds files from its official files (no download).

    aah-prepare --dataset=cub200 --manual_dir=DIR [--data_dir=DIR] [--builder_config=NAME]
                [--skip_corrupt]
    python -m aah_jax.prepare ...

Checks what it finds against the official counts, stops on missing or corrupt images
with their paths (``--skip_corrupt`` skips corrupt images and records them in the
dataset's metadata), and prints the split sizes. README, "Datasets", says where each
dataset's archive goes.
"""

from absl import app, flags

from aah_jax.data import datasets, image_decode

FLAGS = flags.FLAGS
flags.DEFINE_enum('dataset', None, sorted(datasets.DATASETS), 'Dataset to prepare.')
flags.DEFINE_string('manual_dir', None, 'Folder with the official archive or its extracted '
                    'folder (for image_folder: the image folder itself).')
flags.DEFINE_string('data_dir', None, 'tfds data directory (default: tfds\' default).')
flags.DEFINE_string('builder_config', None, 'Builder config (e.g. crop_banner for aircraft).')
flags.DEFINE_integer('max_image_pixels', image_decode.DEFAULT_MAX_PIXELS, 'Largest image '
                     '(width × height) read; a larger one is an error naming the file.')
flags.DEFINE_bool('skip_corrupt', False, 'Skip undecodable images (listed in the metadata) '
                  'instead of stopping.')
flags.mark_flags_as_required(['dataset'])


def main(argv):
  del argv
  image_decode.set_max_pixels(FLAGS.max_image_pixels)
  entry = datasets.dataset_entry(FLAGS.dataset)
  if not (entry.embedded or FLAGS.manual_dir):
    raise app.UsageError(f'--manual_dir is required for {FLAGS.dataset}')
  builder = datasets.make_builder(FLAGS.dataset, FLAGS.builder_config, FLAGS.data_dir,
                                  FLAGS.manual_dir)
  if builder.is_prepared():
    print(f'{builder.info.full_name} is already prepared in {builder.data_dir}')
  else:
    datasets.prepare(builder, FLAGS.manual_dir, skip_corrupt=FLAGS.skip_corrupt)
  sizes = ', '.join(f'{name} {split.num_examples}' for name, split in builder.info.splits.items())
  print(f'{FLAGS.dataset} ({builder.info.full_name}) in {builder.data_dir}: {sizes}')
  skipped = builder.info.metadata.get('skipped_files') or []
  if skipped:
    print(f'skipped {len(skipped)} corrupt image(s): {", ".join(skipped[:10])}')


def run():
  app.run(main)


if __name__ == '__main__':
  run()
