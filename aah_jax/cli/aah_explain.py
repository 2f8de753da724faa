"""aah-explain: which attribute each bit of a trained run encodes, measured and shown.

    aah-explain --workdir=RUN [--split=test] [--step=S] [--images_per_side=8]

Encodes the split (and the database split) and writes RUN/explain/:
- explain.json: for the split's codes, the encoded database's and random codes of the
  same length, ``mean_best_auc`` and ``attributes_covered`` (``aah_jax.analysis.explain``), and
  per bit its best-aligned attribute value with AUC and mutual information;
- alignment.png: the bit × attribute-value heatmap of max(AUC, 1 − AUC);
- bit_NN.png per bit: the images with the most positive and most negative u_j, with the
  attention map of the part that weighs most in that bit overlaid.
On a dataset without attribute annotations it writes the pictures and says so.
"""

import os

from absl import app, flags
import jax
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from aah_jax.analysis import explain
from aah_jax.common import files, workdir_lock
from aah_jax.data import datasets, input_pipeline
from aah_jax.training import evaluation  # pylint: disable=wrong-import-position
from aah_jax.cli import common  # pylint: disable=wrong-import-position
from aah_jax.common.mesh import to_host  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
common.define_run_flags()
flags.DEFINE_string('split', None, 'Split to explain (default: the query split).')
flags.DEFINE_integer('images_per_side', 8, 'Images per bit with the most positive (and '
                     'most negative) u_j.', lower_bound=1)
flags.DEFINE_integer('seed', 0, 'Seed of the random codes compared against.')
EXPLAIN_DIR = 'explain'


def alignment_report(u, attributes, db_u, db_attributes, seed: int) -> dict:
  """The numbers of explain.json for codes u of images with attributes (names, values)."""
  values, names, options = attributes
  indicators, labels = explain.indicators_from_attributes(values, names, options)
  db_indicators, _ = explain.indicators_from_attributes(db_attributes[0], names, options)
  aligned = explain.aligned_auc(u, indicators)
  mi = explain.mutual_information(u >= 0, indicators)
  random_u = np.random.default_rng(seed).normal(size=u.shape)
  per_bit = []
  for j in range(u.shape[1]):
    if np.all(np.isnan(aligned[j])):
      continue
    a = int(np.nanargmax(aligned[j]))
    per_bit.append({'bit': j, 'best_attribute': labels[a], 'auc': float(aligned[j, a]),
                    'mutual_information': float(mi[j, a])})
  codes = explain.summarize_alignment(aligned)  # the matrix above, not computed again
  database = explain.summary(db_u, db_indicators)
  random_codes = explain.summary(random_u, indicators)
  return {
      'mean_best_auc': codes['mean_best_auc'],
      'attributes_covered': codes['attributes_covered'],
      'mean_best_auc_random': random_codes['mean_best_auc'],
      'attributes_covered_random': random_codes['attributes_covered'],
      'mean_best_auc_encoded_database': database['mean_best_auc'],
      'attributes_covered_encoded_database': database['attributes_covered'],
      'codes': codes, 'encoded_database': database, 'random_codes': random_codes,
      'covered_auc': explain.COVERED_AUC,
      'per_bit': per_bit,
      'attribute_values': labels,
  }, aligned


def alignment_figure(aligned: np.ndarray, labels: list, path: str):
  width = min(40, max(6, 0.18 * len(labels) + 2))
  fig, ax = plt.subplots(figsize=(width, max(3, 0.3 * aligned.shape[0] + 1.5)))
  image = ax.imshow(aligned, aspect='auto', cmap='viridis', vmin=0.5, vmax=1)
  ax.set(xlabel='attribute value', ylabel='bit', title='max(AUC, 1 − AUC) of u_j for each '
         'attribute value')
  if len(labels) <= 60:
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
  fig.colorbar(image, ax=ax)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def bit_figures(run, variables, source, u, folder: str, per_side: int):
  """bit_NN.png for every bit: extreme images with the strongest part's attention."""
  chosen = {j: (np.argsort(-u[:, j])[:per_side], np.argsort(u[:, j])[:per_side])
            for j in range(u.shape[1])}
  needed = sorted({int(i) for top, bottom in chosen.values() for i in (*top, *bottom)})
  size = run.config.image_size
  images = {i: input_pipeline.resize_center_crop(np.asarray(source[i]['image']), size)
            for i in needed}
  attend = evaluation.make_attention_encoder(run.model)
  variables = jax.tree.map(to_host, variables)  # this process's copy (multi-host too)
  maps = {}
  for start in range(0, len(needed), 32):
    chunk = needed[start:start + 32]
    _, attention = attend(variables, input_pipeline.normalize(np.stack([images[i] for i in chunk])))
    if attention is not None:
      maps.update(zip(chunk, np.asarray(attention)))
  W = np.asarray(variables['params']['attribute_codec']['W'])
  parts = run.model.num_maps if run.model.use_attention else 0
  for j, (top, bottom) in chosen.items():
    part = explain.strongest_part(W, parts, j) if parts else None
    fig, axes = plt.subplots(2, per_side, figsize=(1.4 * per_side, 3.2), squeeze=False)
    for row, (indices, sign) in enumerate(((top, '+'), (bottom, '−'))):
      for col, i in enumerate(indices):
        ax = axes[row, col]
        ax.imshow(images[i])
        if part is not None and i in maps:
          heat = maps[i][:, :, part]
          ax.imshow(heat / heat.max() if heat.max() > 0 else heat, cmap='jet', alpha=0.45,
                    extent=(0, size, size, 0), interpolation='bilinear')
        ax.set_title(f'{sign} u={u[i, j]:.2f}', fontsize=7)
        ax.axis('off')
    where = f', attention part {part + 1}' if part is not None else ''
    fig.suptitle(f'bit {j}: most positive (top) and most negative (bottom) u_j{where}',
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, f'bit_{j:02d}.png'), dpi=90)
    plt.close(fig)


def main(argv):
  del argv
  common.check_writable_folder(FLAGS.workdir, '--workdir')  # explain/ goes there
  with workdir_lock.hold(FLAGS.workdir, 'aah-explain', create=False):
    _main()


def _main():
  restored = common.restore_run(FLAGS.workdir, FLAGS.step, common.overrides_from_flags())
  run = restored.run
  entry = datasets.dataset_entry(run.config.dataset)
  split = FLAGS.split or entry.query_split
  if split not in run.builder.info.splits:
    raise app.UsageError(f'--split={split!r}: {run.config.dataset} has splits '
                         f'{sorted(run.builder.info.splits)}')
  source = run.builder.as_data_source(split)
  u = run.encode(restored.variables, source)
  attributes = datasets.read_attributes(run.builder, split)
  report = {'workdir': os.path.abspath(FLAGS.workdir), 'step': restored.step,
            'dataset': run.config.dataset, 'split': split, 'bits': int(run.config.bits),
            'num_images': len(u)}
  aligned = None
  if attributes is None:
    report['attributes'] = None
    report['note'] = f'{run.config.dataset} has no attribute annotations: pictures only'
  else:
    db_u = run.encode(restored.variables, run.db_source)
    db_attributes = datasets.read_attributes(run.builder, entry.database_split)
    numbers, aligned = alignment_report(u, attributes, db_u, db_attributes, FLAGS.seed)
    report.update(numbers)
  if jax.process_index() != 0:
    return
  final = os.path.join(FLAGS.workdir, EXPLAIN_DIR)
  tmp = files.staging_folder(final)
  if aligned is not None:
    alignment_figure(aligned, report['attribute_values'], os.path.join(tmp, 'alignment.png'))
  bit_figures(run, restored.variables, source, u, tmp, FLAGS.images_per_side)
  files.write_json(os.path.join(tmp, 'explain.json'), report)
  files.publish_folder(tmp, final)
  if aligned is None:
    print(report['note'])
  else:
    for name in ('codes', 'encoded_database', 'random_codes'):
      print(f'{name}: mean_best_auc {report[name]["mean_best_auc"]:.3f}, attributes_covered '
            f'{report[name]["attributes_covered"]:.3f}')
  print(f'wrote {final}')


def run():
  app.run(main)


if __name__ == '__main__':
  run()
