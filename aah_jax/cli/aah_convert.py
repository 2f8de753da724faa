"""aah-convert: an ImageNet-pretrained torchvision/timm (or EfficientNet-Lite0) state dict
as aah_jax variables, for ``config.model.pretrained`` (aah_jax/models/convert.py maps them).

    aah-convert --src=resnet50.pth --arch=resnet50 --out=resnet50_imagenet.npz
"""

from absl import app, flags
import jax

from aah_jax.models.convert import ARCHS, convert, read_state_dict, save_variables

FLAGS = flags.FLAGS


def main(argv):
  del argv
  variables = convert(read_state_dict(FLAGS.src), FLAGS.arch)
  save_variables(FLAGS.out, variables)
  count = sum(v.size for v in jax.tree.leaves(variables['params']))
  print(f'{FLAGS.out}: {FLAGS.arch} trunk + last stage, {count:,} parameters')


def run():
  flags.DEFINE_string('src', None, 'torchvision/timm state dict (.pth, .safetensors, .npz).')
  flags.DEFINE_enum('arch', None, list(ARCHS), 'Architecture.')
  flags.DEFINE_string('out', None, 'Output .npz of Flax variables.')
  flags.mark_flags_as_required(['src', 'arch', 'out'])
  app.run(main)


if __name__ == '__main__':
  run()
