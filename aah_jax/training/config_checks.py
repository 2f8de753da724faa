"""Every config field's type and range, checked when a run or tool starts, before anything
is computed or written: one error listing each bad field with its value and what it allows
(``--config.bits=0`` used to end in a ZeroDivisionError inside JAX, after creating the
checkpoint folder). Fields not listed here (added by a fork) are not checked."""

from typing import Any, Callable

from aah_jax.data import datasets
from aah_jax.models.backbones import BACKBONES
from aah_jax.training import losses

Rule = tuple[Callable[[Any], bool], str]  # (accepts the value, what is allowed)


def _integer(low: int) -> Rule:
  return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low,
          f'an integer ≥ {low}')


def _number(low: float, high: float = float('inf'), low_open: bool = False,
            high_open: bool = False) -> Rule:
  def accepts(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      return False
    return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
  left = ('(' if low_open else '[') + f'{low:g}'
  right = '∞)' if high == float('inf') else f'{high:g}' + (')' if high_open else ']')
  return accepts, f'a number in {left}, {right}'


def _choice(*allowed) -> Rule:
  return (lambda v: v in allowed, f'one of {list(allowed)}')


def _pair(rule: Rule, ordered: bool = False) -> Rule:
  accepts, text = rule

  def pair(v):
    return (isinstance(v, (tuple, list)) and len(v) == 2 and all(accepts(x) for x in v)
            and (not ordered or v[0] <= v[1]))
  order = ', the first ≤ the second' if ordered else ''
  return pair, f'a pair of {text.replace("a number", "numbers")}{order}'


def _increasing_fractions(v) -> bool:
  return (isinstance(v, (tuple, list)) and all(_number(0.0, 1.0, True, True)[0](x) for x in v)
          and all(a < b for a, b in zip(v, v[1:])))


_BOOL: Rule = (lambda v: isinstance(v, bool), 'True or False')
_TEXT: Rule = (lambda v: isinstance(v, str), 'a string')
_OPTIONAL_TEXT: Rule = (lambda v: v is None or isinstance(v, str), 'a string or None')

RULES: dict[str, Rule] = {
    'seed': _integer(0),
    'bits': _integer(1),
    'dataset': _choice(*sorted(datasets.DATASETS)),
    'image_size': _integer(16),
    'data.builder_config': _TEXT,
    'data.data_dir': _OPTIONAL_TEXT,
    'data.manual_dir': _OPTIONAL_TEXT,
    'data.train_crop_scale': _pair(_number(0.0, 1.0, low_open=True), ordered=True),
    'data.num_threads': _integer(1),
    'data.num_workers': _integer(0),
    'data.prefetch': _integer(0),
    'data.image_dtype': _choice('auto', 'float32', 'bfloat16'),
    'model.backbone': _choice(*sorted(BACKBONES)),
    'model.bits': _integer(1),
    'model.num_attention_maps': _integer(1),
    'model.use_attention': _BOOL,
    'model.use_image_decoder': _BOOL,
    'model.embed_dim': _integer(1),
    'model.generator_base_channels': _integer(1),
    'model.bn_groups': _integer(1),
    'model.dtype': _choice('auto', 'float32', 'bfloat16', 'float64'),
    'model.remat_local_stage': _BOOL,
    'model.codec_init': _choice('uniform', 'global'),
    'model.pretrained': _OPTIONAL_TEXT,
    'loss.gamma': _number(0.0),
    'loss.soft_similarity': _BOOL,
    'loss.term_modules': ((lambda v: isinstance(v, (tuple, list))
                           and all(isinstance(x, str) for x in v)), 'a list of module names'),
    'loss.phase_boundaries': (_increasing_fractions,
                              'increasing fractions of the outer iterations in (0, 1)'),
    'train.num_iterations': _integer(1),
    'train.num_samples': _integer(1),
    'train.epochs': _integer(1),
    'train.batch_size': _integer(1),
    'train.per_device_batch_norm': _BOOL,
    'train.similarity': _choice('explicit', 'grouped', 'chunked'),
    'train.max_group_fraction': _number(0.0, 1.0),
    'train.chunk_rows': _integer(1),
    'optim.learning_rate': _number(0.0, low_open=True),
    'optim.momentum': _number(0.0, 1.0, high_open=True),
    'optim.weight_decay': _number(0.0),
    'optim.lr_decay_fraction': _number(0.0, 1.0),
    'optim.lr_decay_factor': _number(0.0, low_open=True),
    'eval.batch_size': _integer(1),
    'eval.every_iterations': _integer(0),
    'checkpoint.every_steps': _integer(0),
    'checkpoint.keep': _integer(1),
    'checkpoint.async_save': _BOOL,
    'log.every_steps': _integer(0),  # 0: no progress lines
    'log.tensorboard': _BOOL,
    'log.report': _BOOL,
}
_MULTIPLIER: Rule = _number(0.0)


def _flat(tree, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and f'{prefix}{key}' not in RULES:
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _weight_problem(term: str, weights, num_phases: int):
  """What is wrong with config.loss.weights.TERM, or None."""
  if term not in losses.TERMS:
    return f'not a loss term (terms: {list(losses.TERMS)})'
  if not (isinstance(weights, (tuple, list)) and len(weights) == num_phases
          and all(_number(0.0)[0](w) for w in weights)):
    return (f'must be {num_phases} numbers ≥ 0, a weight per phase '
            '(config.loss.phase_boundaries makes the phases)')
  return None


def problems(config) -> list[str]:
  """'config.FIELD=VALUE: allowed' for every field whose value its rule refuses."""
  found = []
  flat = _flat(config.to_dict())
  modules = flat.get('loss.term_modules', ())
  for name in modules if RULES['loss.term_modules'][0](modules) else ():
    try:
      losses.import_term_modules([name])
    except Exception as error:  # pylint: disable=broad-except
      found.append(f'config.loss.term_modules: cannot import {name!r} ({error!r})')
  boundaries = flat.get('loss.phase_boundaries', ())
  num_phases = len(boundaries) + 1 if _increasing_fractions(boundaries) else None
  for field, value in flat.items():
    rule = RULES.get(field)
    if rule is None and field.startswith('optim.lr_multipliers.'):
      rule = _MULTIPLIER
    if field.startswith('loss.weights.'):
      problem = num_phases and _weight_problem(field[len('loss.weights.'):], value, num_phases)
      if problem:
        found.append(f'config.{field}={value!r}: {problem}')
    elif rule is not None and not rule[0](value):
      found.append(f'config.{field}={value!r}: must be {rule[1]}')
  return found


def check(config):
  """ValueError listing every bad field (see problems), before anything runs."""
  found = problems(config)
  if found:
    raise ValueError('bad config: ' + '; '.join(found))
