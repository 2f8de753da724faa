"""The whole run through its command line, on configs/tiny.py and one CPU device:
training, checkpoints and resuming, preemption, non-finite losses, logs, aah-eval."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from aah_jax.common import preemption
from aah_jax.data import image_files
from aah_jax.training import checkpoint, run_log
from configs import tiny
from run_helpers import REPO, checkpoint_steps, final_state, one_device_env
from tolerances import summation_bound

EVERY_STEPS = 20  # checkpoint interval of these runs: 45 steps per outer iteration
TIMING = ('seconds', 'wall_time_seconds')


def _train_command(workdir, data_dir, *flags):
  return [sys.executable, '-m', 'aah_jax.main', '--config=configs/tiny.py',
          f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
          f'--config.checkpoint.every_steps={EVERY_STEPS}', *flags]


def _run(command, timeout=600):
  return subprocess.run(command, cwd=REPO, env=one_device_env(), capture_output=True, text=True,
                        timeout=timeout)


def _last_logged_step(workdir) -> int:
  steps = [r['step'] for r in run_log.read_metrics(workdir, 'step')]
  return max(steps, default=0)


def _start_and_signal(command, workdir, at_step: int, signum, output, env=None) -> int:
  """Runs command (in env, default one_device_env()) until its log shows a step ≥ at_step, sends it
  signum, and returns its exit code; stdout and stderr go to output.out and output.err."""
  with open(f'{output}.out', 'w') as out, open(f'{output}.err', 'w') as err:
    process = subprocess.Popen(command, cwd=REPO, env=env or one_device_env(), stdout=out, stderr=err,
                               text=True)
    deadline = time.time() + 600
    while _last_logged_step(workdir) < at_step:
      assert process.poll() is None, pathlib.Path(f'{output}.err').read_text()[-4000:]
      assert time.time() < deadline
      time.sleep(0.02)
    process.send_signal(signum)
    return process.wait(timeout=120)


def _without_timing(tree):
  if isinstance(tree, dict):
    return {k: _without_timing(v) for k, v in tree.items() if k not in TIMING}
  if isinstance(tree, list):
    return [_without_timing(v) for v in tree]
  return tree


@pytest.fixture(scope='module')
def data_dir(tiny_data_dir):
  return tiny_data_dir


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory, data_dir):
  """An uninterrupted run of configs/tiny.py: (workdir, the process's stdout)."""
  workdir = tmp_path_factory.mktemp('tiny') / 'run'
  result = _run(_train_command(workdir, data_dir))
  assert result.returncode == 0, result.stderr[-4000:]
  return workdir, result.stdout


def test_tiny_config_trains_end_to_end(tiny_run):
  workdir, stdout = tiny_run
  assert 'mAP@all' in stdout and '[10/10]' in stdout  # summary and progress
  results = json.loads((workdir / 'results.json').read_text())
  for key in ('dataset', 'bits', 'map_learned_db', 'map_encoded_db', 'map_random', 'history',
              'wall_time_seconds', 'config'):
    assert key in results
  # Not a rounding tolerance: the two mAPs rank the same distances, differing only in how ties
  # (large at 12 bits over 960 items) are ordered; 0.05 is about a third of the learned mAP.
  assert abs(results['map_tie_aware_learned_db'] - results['map_learned_db']) < 0.05
  config = tiny.get_config()
  assert len(results['history']) == config.train.num_iterations == 10
  assert [h['phase'] for h in results['history']] == [1] * 5 + [2] * 5
  assert results['num_database'] == 960 and results['num_queries'] == 240
  assert results['num_devices'] == 1 and results['config']['bits'] == 12
  # 'auto' dtypes are decided when the run starts and recorded as decided (CPU: float32).
  assert results['config']['model']['dtype'] == results['config']['data']['image_dtype'] == (
      'float32')
  # 48 classes: random codes score about 0.027 here (seeded: the same on every machine).
  # Training must clear that by far, on any machine: the trajectory moves with the CPU's
  # summation order as it does with the seed: seeds 0-3, a 2-device layout and AVX2 code gave
  # learned 0.101-0.164, encoded 0.094-0.154; 2.5× chance (0.069) sits below the lowest.
  assert results['map_random'] < 0.035
  assert results['map_learned_db'] > 2.5 * results['map_random'], results
  assert results['map_encoded_db'] > 2.5 * results['map_random'], results


def test_checkpoints_name_no_code(tiny_run):
  # A checkpoint holds arrays by state field and JSON (progress, config): no module or class
  # path, so moving aah_jax's modules leaves every saved run restorable.
  saved = [path for path in (tiny_run[0] / 'checkpoints').rglob('*') if path.is_file()]
  assert saved and not [path for path in saved if b'aah_jax' in path.read_bytes()]


def test_logs_cover_every_step_and_iteration(tiny_run):
  workdir, stdout = tiny_run
  steps = run_log.read_metrics(workdir, 'step')
  assert [r['step'] for r in steps] == list(range(1, 451))
  for name in ('loss', 'hash', 'quant', 'dec', 'rec', 'img', 'lr', 'phase', 'images_per_second'):
    assert name in steps[-1]
  iterations = run_log.read_metrics(workdir, 'iteration')
  assert [r['iteration'] for r in iterations] == list(range(1, 11))
  assert 'bit_balance' in iterations[0] and 'map_learned_db' in iterations[-1]
  assert 'eta' in stdout  # the progress line
  events = list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  assert events and events[0].stat().st_size > 1000


def test_killed_and_preempted_run_continues_exactly(tiny_run, data_dir, tmp_path):
  """SIGKILL at an arbitrary step, rerun, SIGTERM later, rerun, Ctrl-C (SIGINT) later, rerun
  to the end: the same results.json (but for timings) and bit-identical parameters as
  without interruption. The first two runs go without the suite's shared compilation cache:
  the first keeps its compiled programs in WORKDIR/xla_cache, the second loads them."""
  workdir = tmp_path / 'run'
  command = _train_command(workdir, data_dir)
  own_cache = {k: v for k, v in one_device_env().items() if k != 'JAX_COMPILATION_CACHE_DIR'}

  assert _start_and_signal(command, workdir, 100, signal.SIGKILL, tmp_path / 'killed',
                           env=own_cache) != 0
  assert not (workdir / 'results.json').exists()
  assert max(checkpoint_steps(workdir)) <= _last_logged_step(workdir)
  assert any((workdir / 'xla_cache').iterdir())

  output = tmp_path / 'preempted'
  code = _start_and_signal(command, workdir, 250, signal.SIGTERM, output,
                           env=dict(own_cache, JAX_LOG_COMPILES='1'))
  log = pathlib.Path(f'{output}.err').read_text()
  assert code == 0, log[-4000:]
  assert "Persistent compilation cache hit for 'jit_train_step'" in log
  assert 'preempted' in pathlib.Path(f'{output}.out').read_text()
  saved = max(checkpoint_steps(workdir))
  assert saved >= 250 and saved == _last_logged_step(workdir)  # at the next step boundary

  output = tmp_path / 'interrupted'
  code = _start_and_signal(command, workdir, 350, signal.SIGINT, output)
  assert code == 0, pathlib.Path(f'{output}.err').read_text()[-4000:]
  assert 'Traceback' not in pathlib.Path(f'{output}.err').read_text()
  saved = max(checkpoint_steps(workdir))
  assert saved >= 350 and saved == _last_logged_step(workdir)
  assert not [p.name for p in (workdir / 'checkpoints').iterdir() if 'tmp' in p.name]

  finished = _run(command)
  assert finished.returncode == 0, finished.stderr[-4000:]
  assert 'continuing' in finished.stderr

  expected = json.loads((tiny_run[0] / 'results.json').read_text())
  actual = json.loads((workdir / 'results.json').read_text())
  # Exact: both runs are on this machine with this build and the same compiled executables,
  # where training is deterministic; a resume that restored anything less (RNG, data order,
  # optimiser state, B) would change the trajectory. Across machines it is not (README).
  assert _without_timing(actual) == _without_timing(expected)
  expected_state, actual_state = final_state(tiny_run[0]), final_state(workdir)
  flat_expected = jax_leaves(expected_state)
  flat_actual = jax_leaves(actual_state)
  assert flat_expected.keys() == flat_actual.keys() and len(flat_expected) > 100
  for key, value in flat_expected.items():
    np.testing.assert_array_equal(flat_actual[key], value, err_msg=key)
  # The logs read as one run: every step once, in order.
  assert [r['step'] for r in run_log.read_metrics(workdir, 'step')] == list(range(1, 451))


TINY_SIZES = ('--config.data.builder_config=tiny', '--config.model.num_attention_maps=2',
              '--config.model.generator_base_channels=16', '--config.model.embed_dim=64',
              '--config.train.num_samples=480', '--config.train.batch_size=32',
              '--config.eval.batch_size=128', '--config.log.report=False')


def test_the_worked_variant_trains_its_new_term_and_the_tools_know_it(data_dir, tmp_path):
  """configs/variants/bit_balance.py (one file: a term, its registration, its weights) trains
  with the term in the loss and the logs; aah-eval restores the run, term and all. The run
  also takes the explicit form of the hash loss and the DCC sweep (S against a replicated B,
  the reference's; the other runs here take the default label-grouped form, docs/method.md
  §8), which the terms see through LossInputs."""
  workdir = tmp_path / 'run'
  result = _run([sys.executable, '-m', 'aah_jax.main', '--config=configs/variants/bit_balance.py',
                 f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', *TINY_SIZES,
                 '--config.train.num_iterations=1', '--config.train.epochs=1',
                 '--config.train.similarity=explicit'])
  assert result.returncode == 0, result.stderr[-4000:]
  steps = run_log.read_metrics(workdir, 'step')
  assert len(steps) == 15 and all(0 < r['balance'] < 1 for r in steps)  # (1/k)Σ mean², |u| < 1
  weights = dict(tiny.get_config().loss.weights, balance=(0.1, 0.1))
  for record in steps:
    parts = [weights[name][int(record['phase']) - 1] * record[name] for name in weights]
    # A float32 sum of 6 weighted non-negative terms: error ≤ (6 + 1)·eps·Σ (Higham §4.2).
    assert abs(record['loss'] - sum(parts)) <= summation_bound(7, sum(parts)), record
  evaluated = _run([sys.executable, '-m', 'aah_jax.cli.aah_eval', f'--workdir={workdir}',
                    f'--config.data.data_dir={data_dir}'])
  assert evaluated.returncode == 0, evaluated.stderr[-4000:]


def test_a_second_ctrl_c_interrupts_at_once():
  before = signal.getsignal(signal.SIGINT)
  with preemption.StopSignal() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.requested(0)  # the first asks for a save at the next step boundary
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before  # restored


def jax_leaves(tree) -> dict:
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_a_different_config_does_not_continue_a_run(tiny_run, data_dir, tmp_path):
  workdir, _ = tiny_run
  result = _run(_train_command(workdir, data_dir, '--config.bits=16'))
  assert result.returncode != 0
  assert 'different run' in result.stderr and 'bits: 12 saved, 16 now' in result.stderr
  # A run saved before train.similarity existed trained in the explicit form (ADDED_FIELDS):
  # it continues only as such, and the message names the field and both values.
  old = tmp_path / 'old'
  shutil.copytree(workdir / 'checkpoints', old / 'checkpoints')
  for metadata in (old / 'checkpoints').glob('*/progress/metadata'):
    progress = json.loads(metadata.read_text())
    del progress['config']['train']['similarity']
    metadata.write_text(json.dumps(progress))
  result = _run(_train_command(old, data_dir))
  assert result.returncode != 0
  assert "train.similarity: 'explicit' saved, 'grouped' now" in result.stderr


def test_non_finite_loss_stops_and_names_the_step(data_dir, tmp_path):
  workdir = tmp_path / 'run'
  result = _run(_train_command(workdir, data_dir, '--config.optim.learning_rate=1e30',
                               '--config.optim.lr_multipliers.attribute_codec=1.0',
                               '--config.checkpoint.every_steps=1'))
  assert result.returncode != 0
  assert 'NonFiniteLoss' in result.stderr and 'non-finite loss at step' in result.stderr
  bad_step = int(re.search(r'non-finite loss at step (\d+) \(outer iteration 1\): \w+=(nan|inf)',
                           result.stderr).group(1))
  steps = checkpoint_steps(workdir)
  assert steps and max(steps) < bad_step  # the bad state was not saved
  state = final_state(workdir)
  assert all(np.isfinite(v).all() for v in jax_leaves(state['params']).values())


def test_eval_of_the_saved_run_equals_its_final_numbers(tiny_run, data_dir):
  workdir, _ = tiny_run
  result = _run([sys.executable, '-m', 'aah_jax.cli.aah_eval', f'--workdir={workdir}',
                 f'--config.data.data_dir={data_dir}'])
  assert result.returncode == 0, result.stderr[-4000:]
  evaluation = json.loads((workdir / 'eval.json').read_text())
  results = json.loads((workdir / 'results.json').read_text())
  assert evaluation['step'] == 450
  # Exact: the same saved codes and labels through the same float64 mAP code.
  assert evaluation['learned_db']['map'] == results['map_learned_db']
  assert evaluation['learned_db']['map_tie_aware'] == results['map_tie_aware_learned_db']
  assert evaluation['encoded_db']['map'] == results['map_encoded_db']
  assert evaluation['random']['map'] == results['map_random']
  assert 0 <= evaluation['encoded_db']['precision_at_k']['10'] <= 1
  assert len(evaluation['learned_db']['pr_curve_by_radius']['precision']) == 13
  assert 'aah-eval of step 450' in (workdir / 'report' / 'index.html').read_text()


def test_a_damaged_newest_checkpoint_falls_back_and_is_kept(tiny_run, data_dir, tmp_path):
  """Random bytes in the newest step's progress file: aah-eval names the step and file and
  evaluates the previous step, leaving the damaged one as it is. A truncated array file in
  it: training names it, sets the step aside, continues from the previous step and ends
  where the uninterrupted run ended, though that step's saved config lacks the fields added
  since (as one saved before loss.phase_boundaries and loss.term_modules existed:
  checkpoint.ADDED_FIELDS gives them their values)."""
  original, _ = tiny_run
  steps = checkpoint_steps(original)
  newest, previous = steps[-1], steps[-2]

  workdir = tmp_path / 'eval'
  shutil.copytree(original, workdir)
  progress_file = workdir / 'checkpoints' / str(newest) / 'progress' / 'metadata'
  damaged = np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes()
  progress_file.write_bytes(damaged)
  result = _run([sys.executable, '-m', 'aah_jax.cli.aah_eval', f'--workdir={workdir}',
                 f'--config.data.data_dir={data_dir}'])
  assert result.returncode == 0, result.stderr[-4000:]
  assert f'checkpoint step {newest} cannot be read: {progress_file}' in result.stderr
  assert json.loads((workdir / 'eval.json').read_text())['step'] == previous
  assert progress_file.read_bytes() == damaged  # the read-only tool leaves it in place
  result = _run([sys.executable, '-m', 'aah_jax.cli.aah_eval', f'--workdir={workdir}',
                 f'--config.data.data_dir={data_dir}', f'--step={newest}'])
  assert result.returncode != 0 and f'{progress_file}' in result.stderr  # asked for: an error

  workdir = tmp_path / 'train'
  shutil.copytree(original, workdir)
  (workdir / 'results.json').unlink()
  state = workdir / 'checkpoints' / str(newest) / 'state'
  largest = max((p for p in state.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)
  truncated = largest.read_bytes()[:largest.stat().st_size // 2]
  largest.write_bytes(truncated)
  older_progress = workdir / 'checkpoints' / str(previous) / 'progress' / 'metadata'
  progress = json.loads(older_progress.read_text())
  del progress['config']['loss']['phase_boundaries'], progress['config']['loss']['term_modules']
  older_progress.write_text(json.dumps(progress))
  result = _run(_train_command(workdir, data_dir))
  assert result.returncode == 0, result.stderr[-4000:]
  assert f'checkpoint step {newest} cannot be read: {state}' in result.stderr
  kept = workdir / checkpoint.DAMAGED_DIR / str(newest) / 'state' / largest.relative_to(state)
  assert kept.read_bytes() == truncated  # set aside as it was, never deleted
  assert newest in checkpoint_steps(workdir)  # and the step saved anew
  expected = json.loads((original / 'results.json').read_text())
  actual = json.loads((workdir / 'results.json').read_text())
  assert _without_timing(actual) == _without_timing(expected)  # deterministic (see above)


REPORT_FIGURES = ('loss_terms.png', 'map.png', 'pr_curve.png', 'precision_at_k.png',
                  'gallery.png', 'bits.png', 'attention.png')


def test_report_figures_are_real_pictures(tiny_run):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = tiny_run[0] / 'report'
  page = (folder / 'index.html').read_text()
  for name in REPORT_FIGURES:
    assert f'src="{name}"' in page
    with Image.open(folder / name) as picture:
      pixels = np.asarray(picture.convert('L'), np.float32)
    assert min(pixels.shape) >= 100, name
    assert pixels.std() > 5 and len(np.unique(pixels)) > 20, name  # not blank, not flat
  assert not (tiny_run[0] / 'report.tmp').exists()


def _tool(name, *args):
  return _run([sys.executable, '-m', f'aah_jax.cli.{name}', *args], timeout=300)


def _write_query_images(folder, data_dir, count=4):
  """Test-split images of the tiny set saved as PNG files in class folders (the last under
  a name that is not UTF-8: its bytes reach Python as surrogate escapes)."""
  from aah_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  source = datasets.load_builder('synthetic_birds', 'tiny', str(data_dir)).as_data_source('test')
  paths = []
  for i in range(count):
    example = source[i]
    name = f'{i}.png' if i < count - 1 else os.fsdecode(b'caf\xe9-%d.png' % i)
    path = folder / f'class{int(example["label"]):02d}' / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(example['image'])).save(path)
    paths.append(path)
  return paths


def test_index_and_search_tools(tiny_run, data_dir, tmp_path):
  workdir, _ = tiny_run
  data_flag = f'--config.data.data_dir={data_dir}'
  queries = _write_query_images(tmp_path / 'images', data_dir)

  result = _tool('aah_index', f'--workdir={workdir}', f'--out={tmp_path / "db.idx"}', data_flag)
  assert result.returncode == 0, result.stderr[-4000:]
  from aah_jax.retrieval import index as index_lib  # pylint: disable=g-import-not-at-top
  database = index_lib.load_index(str(tmp_path / 'db.idx'))
  assert len(database) == 960 and database.bits == 12 and database.meta['step'] == 450
  assert database.paths[5] == 'synthetic_birds:train[5]'

  result = _tool('aah_index', f'--workdir={workdir}', f'--out={tmp_path / "folder.idx"}',
                 f'--image_dir={tmp_path / "images"}', data_flag)
  assert result.returncode == 0, result.stderr[-4000:]
  folder = index_lib.load_index(str(tmp_path / 'folder.idx'))
  assert len(folder) == 4 and sorted(folder.paths) == sorted(str(q) for q in queries)

  gallery_png = tmp_path / 'gallery.png'
  result = _tool('aah_search', f'--workdir={workdir}', f'--index={tmp_path / "folder.idx"}',
                 '--k=2', f'--gallery={gallery_png}', data_flag, *map(str, queries))
  assert result.returncode == 0, result.stderr[-4000:]
  for query in queries:  # each image finds itself (or an identical code) at distance 0
    block = result.stdout.split(f'{image_files.printable_name(str(query))}:\n')[1]
    assert block.splitlines()[0].split()[2] == '0', result.stdout
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(gallery_png) as picture:
    assert picture.size[0] > 300 and np.asarray(picture).std() > 10

  result = _tool('aah_search', f'--workdir={workdir}', f'--index={tmp_path / "db.idx"}',
                 data_flag, '--step=440', str(queries[0]))
  assert result.returncode != 0 and 'encoded by another network' in result.stderr
  broken = tmp_path / 'broken.png'
  broken.write_bytes(b'not an image')
  result = _tool('aah_search', f'--workdir={workdir}', f'--index={tmp_path / "db.idx"}',
                 data_flag, str(queries[0]), str(broken))
  assert result.returncode != 0 and f'{broken} (' in result.stderr


def test_explain_tool_measures_and_draws(tiny_run, data_dir):
  workdir, _ = tiny_run
  result = _tool('aah_explain', f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
                 '--images_per_side=4')
  assert result.returncode == 0, result.stderr[-4000:]
  folder = workdir / 'explain'
  report = json.loads((folder / 'explain.json').read_text())
  assert report['split'] == 'test' and report['num_images'] == 240 and report['bits'] == 12
  assert len(report['attribute_values']) == 16  # 2+4+3+3+2+2 values of the 6 attributes
  for key in ('mean_best_auc', 'attributes_covered', 'mean_best_auc_random',
              'attributes_covered_random', 'mean_best_auc_encoded_database',
              'attributes_covered_encoded_database'):
    assert 0 <= report[key] <= 1, key
  # Random codes, 240 images: the folded AUC of an unrelated bit is 0.5 + |N(0, σ)| with
  # σ = sqrt((n+1)/(12·P·(n−P))) ≤ 0.043 for P ≥ 60 positives; the best of 12 bits ≈ 0.5 + 2.2σ.
  assert 0.5 <= report['mean_best_auc_random'] < 0.65
  assert len(report['per_bit']) == 12
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for name in ['alignment.png'] + [f'bit_{j:02d}.png' for j in range(12)]:
    with Image.open(folder / name) as picture:
      pixels = np.asarray(picture.convert('L'), np.float32)
    assert pixels.std() > 5 and len(np.unique(pixels)) > 20, name
