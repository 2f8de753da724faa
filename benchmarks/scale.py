"""The hash loss (with its gradient) and the DCC sweep as the database grows: the explicit form
(docs/method.md §3–§4: an n × N similarity per step, an |Ω| × N one per sweep) against the
label-grouped form (§8), in the same run, on this host's CPU.

    .venv/bin/python benchmarks/scale.py [--sizes=6000,75000,1000000,10000000] [--rounds=5]

For each N: the median seconds of one hash-loss value-and-gradient (batch n, k bits, G
classes) and of one DCC sweep (|Ω| samples), and the compiled temporary memory of each
(XLA's memory analysis of the compiled program: what it allocates beyond its arguments and
outputs). The grouped loss takes B's summary (K = BᵀB, group sums; once per outer iteration,
timed as 'summary'). The explicit forms stop at --max_explicit_loss / --max_explicit_dcc
(their n × N and |Ω| × N arrays outgrow this machine's memory). Ratios are against the grouped
form at the smallest N, measured in the same run.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from aah_jax.training import adsh, grouped, losses


def _median_seconds(fn, *args, rounds: int) -> float:
  jax.block_until_ready(fn(*args))  # compile and warm up
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _temp_bytes(fn, *args) -> int:
  return int(fn.lower(*args).compile().memory_analysis().temp_size_in_bytes)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='6000,75000,1000000,10000000')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--bits', type=int, default=12)
  parser.add_argument('--classes', type=int, default=200)
  parser.add_argument('--num_samples', type=int, default=2000)
  parser.add_argument('--max_explicit_loss', type=int, default=1_000_000)
  parser.add_argument('--max_explicit_dcc', type=int, default=75_000)
  args = parser.parse_args()
  n, k, num_classes, gamma = args.batch, args.bits, args.classes, 200.0
  rng = np.random.default_rng(0)
  rows = []
  for N in (int(s) for s in args.sizes.split(',')):
    db_labels = rng.integers(0, num_classes, N).astype(np.int32)
    B = jnp.asarray(rng.choice(np.float32([-1, 1]), (N, k)))
    groups = jax.device_put(grouped.LabelGroups.of(db_labels))
    group_of, group_rows, counts = groups.group_of, groups.rows, groups.counts
    batch = rng.choice(N, n, replace=False)
    F = jnp.asarray(rng.uniform(-1, 1, (n, k)), jnp.float32)
    omega = jnp.asarray(rng.choice(N, args.num_samples, replace=False))
    U = jnp.asarray(rng.uniform(-1, 1, (args.num_samples, k)), jnp.float32)
    batch_labels, omega_labels = jnp.asarray(db_labels[batch]), jnp.asarray(db_labels[omega])
    r = grouped.negative_weight(grouped.membership(omega_labels, group_rows), counts)

    summarize = jax.jit(lambda B, groups, omega: grouped.summarize(B, groups, omega,
                                                                   num_database=N))
    summary = summarize(B, groups, omega)
    grouped_loss = jax.jit(lambda F, labels, r, summary: jax.value_and_grad(
        lambda F: grouped.hash_loss(F, grouped.membership(labels, group_rows), r, summary,
                                    code_length=k))(F))
    grouped_dcc = jax.jit(lambda B, U, omega, labels, group_of: grouped.dcc_update(
        B, U, omega, grouped.membership(labels, group_rows), r, group_of, gamma))
    row = {'N': N,
           'summary_s': _median_seconds(summarize, B, groups, omega, rounds=args.rounds),
           'loss_s': _median_seconds(grouped_loss, F, batch_labels, r, summary,
                                     rounds=args.rounds),
           'loss_temp': _temp_bytes(grouped_loss, F, batch_labels, r, summary),
           'dcc_s': _median_seconds(grouped_dcc, B, U, omega, omega_labels, group_of,
                                    rounds=args.rounds),
           'dcc_temp': _temp_bytes(grouped_dcc, B, U, omega, omega_labels, group_of)}
    if N <= args.max_explicit_loss:
      db_labels_device = jnp.asarray(db_labels)
      explicit_loss = jax.jit(lambda F, B, labels, db_labels, r: jax.value_and_grad(
          lambda F: losses.hash_loss(F, B, adsh.similarity_rows(labels, db_labels, r),
                                     code_length=k))(F))
      loss_args = (F, B, batch_labels, db_labels_device, r)
      row['explicit_loss_s'] = _median_seconds(explicit_loss, *loss_args, rounds=args.rounds)
      row['explicit_loss_temp'] = _temp_bytes(explicit_loss, *loss_args)
      value, grouped_value = explicit_loss(*loss_args)[0], grouped_loss(F, batch_labels, r,
                                                                        summary)[0]
      row['loss_rel_diff'] = abs(float(grouped_value) / float(value) - 1)
    if N <= args.max_explicit_dcc:
      explicit_dcc = jax.jit(lambda B, U, omega, labels, db_labels: adsh.dcc_update(
          B, U, omega, adsh.similarity(labels, db_labels), gamma))
      dcc_args = (B, U, omega, omega_labels, jnp.asarray(db_labels))
      row['explicit_dcc_s'] = _median_seconds(explicit_dcc, *dcc_args, rounds=args.rounds)
      row['explicit_dcc_temp'] = _temp_bytes(explicit_dcc, *dcc_args)
      row['dcc_bits_differing'] = int(jnp.sum(explicit_dcc(*dcc_args) != grouped_dcc(
          B, U, omega, omega_labels, group_of)))
    rows.append(row)
    print(row, flush=True)
  _print_table(rows, n, k, num_classes, args.num_samples)


def _print_table(rows, n, k, num_classes, num_samples):
  base_loss, base_dcc = rows[0]['loss_s'], rows[0]['dcc_s']
  mib = lambda b: f'{b / 2**20:,.1f}'
  ms = lambda s: f'{s * 1e3:,.2f}'
  print(f'\nbatch n={n}, k={k}, G={num_classes} classes, |Ω|={num_samples}; ratios against '
        f'the grouped form at N={rows[0]["N"]:,}')
  print('| N | grouped loss+grad ms (×) | temp MiB | explicit loss+grad ms (×) | temp MiB | '
        'summary ms | grouped DCC ms (×) | temp MiB | explicit DCC ms (×) | temp MiB |')
  print('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for row in rows:
    explicit_loss = (f'{ms(row["explicit_loss_s"])} ({row["explicit_loss_s"] / base_loss:.1f}×)'
                     if 'explicit_loss_s' in row else 'not run')
    explicit_dcc = (f'{ms(row["explicit_dcc_s"])} ({row["explicit_dcc_s"] / base_dcc:.1f}×)'
                    if 'explicit_dcc_s' in row else 'not run')
    print(f'| {row["N"]:,} | {ms(row["loss_s"])} ({row["loss_s"] / base_loss:.2f}×) | '
          f'{mib(row["loss_temp"])} | {explicit_loss} | '
          f'{mib(row["explicit_loss_temp"]) if "explicit_loss_temp" in row else "–"} | '
          f'{ms(row["summary_s"])} | {ms(row["dcc_s"])} ({row["dcc_s"] / base_dcc:.1f}×) | '
          f'{mib(row["dcc_temp"])} | {explicit_dcc} | '
          f'{mib(row["explicit_dcc_temp"]) if "explicit_dcc_temp" in row else "–"} |')


if __name__ == '__main__':
  main()
