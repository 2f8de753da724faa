"""Every backbone by name. A spec has ``trunk_channels`` (C of T), ``feature_channels``
(C4) and makes the two modules the network is built from: ``trunk(norm, dtype, name)``
(image → T at stride 16) and ``last_stage(norm, dtype, name, remat)`` (T → stride 32)."""

from aah_jax.models.efficientnet import EFFICIENTNETS
from aah_jax.models.resnet import RESNETS

BACKBONES = {**RESNETS, **EFFICIENTNETS}


def backbone_spec(name: str):
  if name not in BACKBONES:
    raise ValueError(f'unknown backbone {name!r}; choose one of {sorted(BACKBONES)}')
  return BACKBONES[name]
