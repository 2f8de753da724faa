"""aah-plan: compile a config for a Cloud TPU topology or GPU nodes on this host, and size it.

    aah-plan --config=configs/cub200.py --topology=v5e:4x4 [--per_chip_batch=16]
             [--per_chip_eval_batch=64] [--num_database=N] [--num_groups=G] [--search_batch]
             [--out=plan.json]
             [--programs=train_step,dcc_update,encoder] [--hlo_dir=DIR]
             [--config.FIELD=VALUE ...]

Needs libtpu and the CUDA plugin (pip install -e '.[plan]'), not a TPU or GPU: the TPU and
GPU compilers run on this CPU. GPU topologies are GPU:PARTITIONSxHOSTSxGPUS_PER_HOST
(h100:1x1x8, a100:1x2x8, h200:1x1x8); the GPU compiler counts no bytes, so their estimate
is flops / peak alone, a lower bound. So is the estimate of a program with while loops (the
DCC sweep's over the bits): the compilers count each loop body once, whatever its trip count.
Compiles the train step, the DCC update and the encoder with the run's shardings and prints,
per chip: memory (arguments, temporaries, outputs, aliased) against the chip's HBM, whether
it fits, flops and bytes accessed, a roofline estimate of step time and images/s (an
estimate from the compiler's counts and the chip's peak figures, not a measurement), the
compile time and the collectives of the optimised HLO; with --search_batch also the largest
per-chip train batch that fits. --out writes all of it as JSON.
"""

import os

# The programs are compiled for compile-only devices, never run here: JAX itself needs only
# the CPU (and so the CUDA plugin skips its check for CUDA libraries this host need not have).
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from absl import app, flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=wrong-import-position

from aah_jax.analysis import plan
from aah_jax.common import files  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'ml_collections config file.', lock_config=True)
flags.DEFINE_string('topology', None, 'TPU topology, GENERATION:SHAPE (v5e:2x2, v4:2x2x1, '
                    'v5p:2x2x1, v6e:4x4, …), or GPU:PARTITIONSxHOSTSxGPUS (h100:1x1x8, '
                    'a100:1x2x8, h200:1x1x8).')
flags.DEFINE_integer('per_chip_batch', 16, 'Training images per chip per step.')
flags.DEFINE_integer('per_chip_eval_batch', 64, 'Encoder images per chip per call.')
flags.DEFINE_integer('num_database', None, 'Database size N, where the dataset does not fix it.')
flags.DEFINE_integer('num_groups', None, 'Distinct database label rows G, for '
                     'config.train.similarity=grouped where the dataset does not fix them.')
flags.DEFINE_bool('search_batch', False, 'Also find the largest per-chip train batch that fits '
                  '(2 to 4 more compiles of the step).')
flags.DEFINE_list('programs', list(plan.PROGRAMS), 'Which programs to compile, of '
                  f'{", ".join(plan.PROGRAMS)}.')
flags.DEFINE_string('out', None, 'Write the plan here as JSON.')
flags.DEFINE_string('hlo_dir', None, 'Also write each program\'s optimised HLO here, as '
                    'NAME.hlo.txt (the folder appears complete or not at all).')
flags.mark_flags_as_required(['config', 'topology'])


def _size(num_bytes: float) -> str:
  if num_bytes >= plan.GiB:
    return f'{num_bytes / plan.GiB:.2f} GiB'
  return f'{num_bytes / 2**20:.1f} MiB'


def _similarity(report: dict) -> str:
  if report.get('similarity') == 'grouped':
    return f'label-grouped, G = {report["num_groups"]:,}'
  if report.get('similarity') == 'chunked':
    return 'explicit similarity, chunked over each device\'s rows'
  return 'explicit similarity'


def summary(report: dict) -> str:
  chip = report['chip']
  lines = [f'{report["topology"]}: {report["chips"]} × {chip["name"]} ({report["device_kind"]}, '
           f'{_size(chip["hbm_bytes"])} HBM each, {report["devices_per_chip"]} device(s) per '
           f'chip); {report["dataset"]}, N = '
           f'{report["num_database"]:,} ({_similarity(report)}), {report["image_size"]} px, '
           f'{report["model_dtype"]}, '
           f'{report["per_chip_batch"]} images per chip (global batch {report["global_batch"]})']
  for name, program in report['programs'].items():
    memory = program['memory_per_device']
    fits = 'fits' if program['fits'] else 'DOES NOT FIT'
    lines.append(
        f'  {name}: {_size(memory["total"])} per device ({fits}; '
        f'arguments {_size(memory["arguments"])}, temporaries {_size(memory["temporaries"])}, '
        f'outputs {_size(memory["outputs"])}, aliased {_size(memory["aliased"])}); '
        f'{program["flops_per_device"] / 1e9:,.1f} GFLOP ({program["flops_counted_by"]}) and '
        + ('no byte count' if program['bytes_accessed_per_device'] is None else
           f'{program["bytes_accessed_per_device"] / 1e9:,.2f} GB accessed')
        + f' per device; compiled in {program["compile_seconds"]:.0f} s')
    estimate = f"    estimated {program['estimated_seconds'] * 1e3:,.3g} ms"
    if program.get('estimated_images_per_second'):
      estimate += f', {program["estimated_images_per_second"]:,.0f} images/s'
    basis = ('flops / peak' if program['bytes_accessed_per_device'] is None
             else 'roofline estimate')
    if program['while_loops']:
      basis += (f' from counts that take the body of each of its {program["while_loops"]} '
                'while loop(s) once, whatever the trip count')
    lines.append(f'{estimate} ({basis}'
                 + (': a lower bound' if program['estimate_is_lower_bound'] else '')
                 + ', not a measurement)')
    used = {k: v for k, v in program['collectives'].items() if v['count']}
    lines.append('    collectives: ' + (', '.join(
        f'{k} ×{v["count"]} ({v["bytes"] / 2**20:,.2f} MiB)' for k, v in used.items()) or 'none'))
  if 'largest_per_chip_batch' in report:
    exact = report['largest_per_chip_batch_is_exact']
    lines.append(f'  largest per-chip train batch that fits: '
                 f'{"" if exact else "at least "}{report["largest_per_chip_batch"]}'
                 f'{"" if exact else " (the search stopped before a batch that does not fit)"}')
  return '\n'.join(lines)


def main(argv):
  del argv
  if FLAGS.search_batch and 'train_step' not in FLAGS.programs:
    raise SystemExit('aah-plan: --search_batch needs train_step among --programs')
  try:
    report = plan.plan(FLAGS.config, FLAGS.topology, FLAGS.per_chip_batch,
                       FLAGS.per_chip_eval_batch, FLAGS.num_database,
                       only=tuple(FLAGS.programs), keep_compiled=bool(FLAGS.hlo_dir),
                       num_groups=FLAGS.num_groups)
    if FLAGS.search_batch:
      largest, exact = plan.largest_fitting_batch(FLAGS.config, FLAGS.topology, report,
                                                  FLAGS.num_database)
      report['largest_per_chip_batch'] = largest
      report['largest_per_chip_batch_is_exact'] = exact
  except plan.PlanError as error:
    raise SystemExit(f'aah-plan: {error}') from error
  compiled = report.pop('compiled', {})
  print(summary(report))
  if FLAGS.hlo_dir:
    staging = files.staging_folder(FLAGS.hlo_dir)
    for name, executable in compiled.items():
      with open(os.path.join(staging, f'{name}.hlo.txt'), 'w') as f:
        f.write(executable.as_text())
    files.publish_folder(staging, FLAGS.hlo_dir)
  if FLAGS.out:
    files.write_json(FLAGS.out, report)


def run():
  app.run(main)


if __name__ == '__main__':
  run()
