"""Flax linen modules of A²-Net++."""

from aah_jax.models.a2net import A2NetOutput, A2NetPlusPlus, create_model, init_variables
from aah_jax.models.backbones import BACKBONES, backbone_spec
from aah_jax.models.efficientnet import EfficientNetLite, EfficientNetSpec
from aah_jax.models.resnet import BackboneSpec, ResNet
