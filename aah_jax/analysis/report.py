"""The run report: WORKDIR/report/ with PNG figures and an index.html that shows them.

Figures: loss terms per step, mAP per outer iteration, the precision-recall curve over
Hamming radii and precision@k (learned B, encoded database, random codes), a retrieval
gallery (queries and their top 10 in the learned B, correct in green, wrong in red), bit
balance and the bit-correlation heatmap of B, and attention maps over query images.

``collect`` does the computing (on every process: encoding is sharded); ``write`` draws
and writes (process 0), into a temporary folder that replaces report/ when complete.
"""

import dataclasses
import html
import os
from typing import Optional

import jax
from matplotlib import ticker
from matplotlib.figure import Figure
import numpy as np

from aah_jax.common import files
from aah_jax.common.mesh import to_host
from aah_jax.data import input_pipeline
from aah_jax.retrieval import gallery, ranking
from aah_jax.retrieval.codes import hash_codes
from aah_jax.training import evaluation, losses, run_log

REPORT_DIR = 'report'
GALLERY_QUERIES = 8
GALLERY_K = 10
ATTENTION_IMAGES = 6
ATTENTION_MAPS = 6
TOPK = 100  # mAP@k of the report's table
PRECISION_KS = (1, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclasses.dataclass
class ReportData:
  """Everything the figures show, as host arrays and plain values."""

  title: str
  steps: list  # metrics.jsonl step records
  iterations: list  # per outer iteration records
  curves: dict  # name → detailed_metrics(...) of that database
  bit_mean: np.ndarray  # (k,) mean ±1 code of each bit of B (bit_statistics)
  bit_correlation: np.ndarray  # (k, k)
  gallery_rows: list  # [(gallery.Tile, [gallery.Tile])]
  attention_images: np.ndarray  # (n, S, S, 3) uint8
  attention: Optional[np.ndarray]  # (n, h, w, M) or None


BIT_STATISTICS_ROWS = 1 << 16  # rows unpacked (as float64) at a time


def bit_statistics(codes) -> tuple[np.ndarray, np.ndarray]:
  """(mean of each bit, the k × k correlation of the bits) of ±1 codes in any form, as
  ``np.corrcoef`` gives it (0 for a constant bit, the identity for one row), summed over
  ``BIT_STATISTICS_ROWS`` rows at a time: a packed database is never unpacked whole."""
  packed = ranking.pack_codes(codes)
  n, k = len(packed), packed.bits
  total, gram = np.zeros(k), np.zeros((k, k))
  for start in range(0, n, BIT_STATISTICS_ROWS):
    rows = ranking.as_pm1(packed[start:start + BIT_STATISTICS_ROWS]).astype(np.float64)
    total += rows.sum(axis=0)
    gram += rows.T @ rows
  mean = total / max(n, 1)
  if n < 2:
    return mean, np.eye(k)
  covariance = gram / n - np.outer(mean, mean)
  scale = np.sqrt(np.outer(np.diag(covariance), np.diag(covariance)))
  with np.errstate(divide='ignore', invalid='ignore'):
    return mean, np.nan_to_num(np.where(scale > 0, covariance / scale, 0.0))


def _db_image(source, row: int) -> np.ndarray:
  return np.asarray(source[int(row)]['image'])


def collect(splits: evaluation.Splits, model, variables: dict, query_u: np.ndarray,
            db_codes, B, workdir: str, *, seed: int,
            image_size: int, title: str, curves: Optional[dict] = None) -> ReportData:
  """Computes the report's contents (all processes) from the query u and the database's
  codes (u, or codes in any form ``ranking`` takes, such as packed).

  model and variables draw the attention maps; B: the learned database codes (any form), or
  None where the database is not the one they were learned for (the gallery and bit figures
  then use the encoded database). curves: ``evaluation.detailed_metrics`` per database name ('learned
  B', 'encoded database', 'random codes') where the caller has them already; computed
  otherwise (random codes drawn from seed)."""
  query_codes, db_codes = np.asarray(hash_codes(query_u)), ranking.pack_codes(db_codes)
  if curves is None:
    random_query, random_db = evaluation.random_codes(seed, len(query_codes),
                                                      len(db_codes), db_codes.bits)
    databases = [('encoded database', query_codes, db_codes),
                 ('random codes', random_query, random_db)]
    if B is not None:
      databases.insert(0, ('learned B', query_codes, B))
    curves = {name: evaluation.detailed_metrics(q, db, splits.query_labels, splits.db_labels,
                                                topk=TOPK, ks=PRECISION_KS)
              for name, q, db in databases}
  B = db_codes if B is None else ranking.pack_codes(B)
  bit_mean, bit_correlation = bit_statistics(B)

  queries = np.linspace(0, len(query_codes) - 1, GALLERY_QUERIES).astype(int)
  _, neighbours = ranking.search(query_codes[queries], B, GALLERY_K)
  rows = []
  for q, found in zip(queries, neighbours):
    relevant = ranking.relevance(splits.query_labels[q:q + 1], splits.db_labels[found])[0]
    rows.append((gallery.Tile(_db_image(splits.query_source, q), f'query {q}'),
                 [gallery.Tile(_db_image(splits.db_source, j), f'#{j}', bool(ok))
                  for j, ok in zip(found, relevant)]))

  picked = queries[:ATTENTION_IMAGES]
  images = np.stack([input_pipeline.resize_center_crop(_db_image(splits.query_source, q),
                                                       image_size) for q in picked])
  local_variables = jax.tree.map(to_host, variables)  # this process's copy (multi-host too)
  _, attention = evaluation.make_attention_encoder(model)(
      local_variables, input_pipeline.normalize(images))
  return ReportData(title=title, steps=run_log.read_metrics(workdir, 'step'),
                    iterations=run_log.read_metrics(workdir, 'iteration'), curves=curves,
                    bit_mean=bit_mean, bit_correlation=bit_correlation, gallery_rows=rows, attention_images=images,
                    attention=None if attention is None else np.asarray(attention))


def _subplots(*grid, **options):
  """(figure, axes) without pyplot: the report leaves matplotlib's global backend alone."""
  fig = Figure(figsize=options.pop('figsize'))
  return fig, fig.subplots(*grid, **options)


def _save(fig, folder: str, name: str) -> str:
  fig.tight_layout()
  fig.savefig(os.path.join(folder, name), dpi=100)
  return name


def _loss_figure(data: ReportData, folder: str):
  fig, ax = _subplots(figsize=(8, 4.5))
  steps = [r['step'] for r in data.steps]
  positive = True
  for term in ('loss', *losses.TERMS):  # the terms the run computed (others are absent)
    values = [r.get(term) for r in data.steps]
    if steps and all(v is not None for v in values) and any(values):
      ax.plot(steps, values, label=term, linewidth=1)
      positive = positive and min(values) > 0
  ax.set(xlabel='step', ylabel='value (unweighted)', title='loss terms per step',
         yscale='log' if positive else 'symlog')
  ax.legend()
  return _save(fig, folder, 'loss_terms.png')


def _map_figure(data: ReportData, folder: str):
  fig, ax = _subplots(figsize=(7, 4))
  for key, label in (('map_learned_db', 'learned B'), ('map_encoded_db', 'encoded database'),
                     ('map_random', 'random codes')):
    points = [(r['iteration'], r[key]) for r in data.iterations if key in r]
    if points:
      ax.plot(*zip(*points), marker='o', label=label)
  ax.set(xlabel='outer iteration', ylabel='mAP@all', title='mAP per outer iteration')
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.legend()
  return _save(fig, folder, 'map.png')


def _curve_figures(data: ReportData, folder: str):
  fig, ax = _subplots(figsize=(6, 5))
  for name, curves in data.curves.items():
    pr = curves['pr_curve_by_radius']
    ax.plot(pr['recall'], pr['precision'], marker='.', label=name)
  ax.set(xlabel='recall', ylabel='precision', title='precision-recall over Hamming radii',
         xlim=(0, 1.02), ylim=(0, 1.02))
  ax.legend()
  pr_name = _save(fig, folder, 'pr_curve.png')
  fig, ax = _subplots(figsize=(6, 4))
  for name, curves in data.curves.items():
    ks = [int(k) for k in curves['precision_at_k']]
    ax.plot(ks, list(curves['precision_at_k'].values()), marker='o', label=name)
  ax.set(xlabel='k', ylabel='precision@k', xscale='log', title='precision@k', ylim=(0, 1.02))
  ax.legend()
  return [pr_name, _save(fig, folder, 'precision_at_k.png')]


def _bits_figure(data: ReportData, folder: str):
  fig, (left, right) = _subplots(1, 2, figsize=(10, 4))
  left.bar(np.arange(len(data.bit_mean)), data.bit_mean)
  left.set(xlabel='bit', ylabel='mean code', ylim=(-1, 1), title='bit balance (0 = balanced)')
  image = right.imshow(data.bit_correlation, cmap='coolwarm', vmin=-1, vmax=1)
  right.set(xlabel='bit', ylabel='bit', title='bit correlation')
  fig.colorbar(image, ax=right)
  return _save(fig, folder, 'bits.png')


def _attention_figure(data: ReportData, folder: str):
  if data.attention is None:
    return None
  maps = min(ATTENTION_MAPS, data.attention.shape[-1])
  n = len(data.attention_images)
  fig, axes = _subplots(n, maps + 1, figsize=(1.6 * (maps + 1), 1.6 * n), squeeze=False)
  size = data.attention_images.shape[1]
  for i in range(n):
    axes[i, 0].imshow(data.attention_images[i])
    for m in range(maps):
      heat = data.attention[i, :, :, m]
      heat = heat / heat.max() if heat.max() > 0 else heat
      axes[i, m + 1].imshow(data.attention_images[i])
      axes[i, m + 1].imshow(heat, cmap='jet', alpha=0.5, extent=(0, size, size, 0),
                            interpolation='bilinear')
      if i == 0:
        axes[i, m + 1].set_title(f'map {m + 1}', fontsize=8)
  for ax in axes.ravel():
    ax.axis('off')
  return _save(fig, folder, 'attention.png')


def _html(data: ReportData, figures: list[tuple[str, str]]) -> str:
  rows = ''.join(f'<h2>{html.escape(caption)}</h2><img src="{name}" alt="{html.escape(caption)}">\n'
                 for name, caption in figures)
  topk = next(key for key in next(iter(data.curves.values())) if key.startswith('map@'))
  numbers = ''.join(
      f'<tr><td>{html.escape(name)}</td><td>{c["map"]:.4f}</td><td>{c[topk]:.4f}</td>'
      f'<td>{c["precision_within_radius_2"]:.4f}</td></tr>' for name, c in data.curves.items())
  return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(data.title)}'
          f'</title><style>body{{font-family:sans-serif;margin:2em}}img{{max-width:100%}}'
          f'td,th{{padding:0 1em}}</style></head><body><h1>{html.escape(data.title)}</h1>'
          f'<table><tr><th>database</th><th>mAP@all</th><th>{html.escape(topk.replace("map", "mAP"))}</th>'
          f'<th>precision, radius 2</th></tr>{numbers}</table>\n{rows}</body></html>\n')


def write(data: ReportData, workdir: str) -> str:
  """Draws every figure into WORKDIR/report (replaced only once all are written)."""
  final = os.path.join(workdir, REPORT_DIR)
  tmp = files.staging_folder(final)
  figures = [(_loss_figure(data, tmp), 'Loss terms per step'),
             (_map_figure(data, tmp), 'mAP per outer iteration')]
  pr_name, pk_name = _curve_figures(data, tmp)
  figures += [(pr_name, 'Precision-recall over Hamming radii'), (pk_name, 'Precision@k')]
  gallery.render_gallery(data.gallery_rows, os.path.join(tmp, 'gallery.png'))
  source = 'learned B' if 'learned B' in data.curves else 'encoded database'
  figures.append(('gallery.png', f'Queries and their top {GALLERY_K} in the {source} '
                                 '(green: relevant, red: not)'))
  figures.append((_bits_figure(data, tmp), f'Bit balance and bit correlation of the {source}'))
  attention = _attention_figure(data, tmp)
  if attention:
    figures.append((attention, 'Attention maps over query images'))
  with open(os.path.join(tmp, 'index.html'), 'w') as f:
    f.write(_html(data, figures))
  files.publish_folder(tmp, final)
  return final
