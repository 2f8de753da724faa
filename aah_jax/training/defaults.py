"""Every config field, its default and its meaning: the main job's default (the embedded
synthetic fine-grained birds on 2 CPU cores), which configs/default.py is.

The tools also complete a config saved before a field existed with these defaults.
`--config.bits=48` changes k and, unless `config.model.num_attention_maps` is set, M with it.
"""

import ml_collections

from aah_jax.training.losses import DEFAULT_WEIGHTS


def get_config() -> ml_collections.ConfigDict:
  """Every field with its default, by section (one function per section below)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.bits = 12  # k: 12, 24, 32 or 48 in the paper.
  config.dataset = 'synthetic_birds'
  config.image_size = 32
  _data_fields(config)
  _model_fields(config)
  _loss_fields(config)
  _train_fields(config)
  _optim_fields(config)
  _eval_fields(config)
  _checkpoint_fields(config)
  _log_fields(config)
  return config


def _data_fields(config: ml_collections.ConfigDict):
  config.data = ml_collections.ConfigDict()
  config.data.builder_config = 'default'  # tfds builder config ('' for the dataset's default)
  config.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: tfds' default
  # Where the official files are (or the image folder of dataset 'image_folder'): a missing
  # dataset is prepared from here on first use. None: it must be prepared (aah-prepare).
  config.data.manual_dir = ml_collections.FieldReference(None, field_type=str)
  config.data.train_crop_scale = (0.25, 1.0)  # random-resized-crop area range (paper: 0.08–1)
  config.data.num_threads = 2  # reader threads
  config.data.num_workers = 0  # reader processes (0: threads in this process only)
  config.data.prefetch = 2  # global batches copied to the devices ahead of the step
  # The images the pipeline delivers: 'float32', 'bfloat16', or 'auto' (bfloat16 on TPU,
  # float32 elsewhere; aah_jax/models/precision.py says why).
  config.data.image_dtype = 'auto'


def _model_fields(config: ml_collections.ConfigDict):
  config.model = ml_collections.ConfigDict()
  config.model.backbone = 'small_cnn'
  config.model.bits = config.get_ref('bits')
  # M = k (OPEN); `* 1` keeps the link to bits while letting M be overridden on its own.
  config.model.num_attention_maps = config.get_ref('bits') * 1
  config.model.use_attention = True
  config.model.use_image_decoder = True
  config.model.embed_dim = 512
  config.model.generator_base_channels = 64
  config.model.bn_groups = 1
  # Convolutions and matmuls of the network: 'float32', 'bfloat16', 'float64' (a CPU
  # reference) or 'auto' (bfloat16 on TPU, float32 elsewhere), decided when the run starts.
  config.model.dtype = 'auto'
  config.model.remat_local_stage = False  # recompute the local stage-4 path in backward
  # W's initialisation: 'uniform' (PyTorch's U(±1/√D) over all of W) or 'global' (g's block
  # as the global-only network's, U(±1/√C4); the parts' blocks 0). docs/method.md §2, item 6.
  config.model.codec_init = 'uniform'
  # A converted ImageNet backbone (aah-convert) for the trunk and both last-stage copies.
  config.model.pretrained = ml_collections.FieldReference(None, field_type=str)


def _loss_fields(config: ml_collections.ConfigDict):
  config.loss = ml_collections.ConfigDict()
  config.loss.gamma = 200.0
  config.loss.soft_similarity = True
  # Phases: phase p starts at outer iteration ⌊boundary · num_iterations⌋ of its boundary;
  # (0.5,) gives the paper's two halves (docs/method.md §3.3).
  config.loss.phase_boundaries = (0.5,)
  # term → its weight per phase; a term with all weights 0 is not computed. The registered
  # terms and their defaults: aah_jax.training.losses.TERMS / DEFAULT_WEIGHTS.
  config.loss.weights = ml_collections.ConfigDict(DEFAULT_WEIGHTS)
  # Modules that register more terms (aah_jax.training.losses.register_term), imported when a run or
  # a tool starts: configs/variants/bit_balance.py is an example.
  config.loss.term_modules = ()


def _train_fields(config: ml_collections.ConfigDict):
  config.train = ml_collections.ConfigDict()
  config.train.num_iterations = 30  # outer iterations
  config.train.num_samples = 1024  # |Ω| per outer iteration
  config.train.epochs = 3  # epochs over Ω per outer iteration
  config.train.batch_size = 64  # global batch n
  # How the step and the DCC sweep compute against the database (docs/method.md §8):
  # 'grouped' sums per distinct label row (no N-sized similarity; B and the group ids split
  # over the devices by rows); 'explicit' builds the n × N and |Ω| × N similarities against
  # a replicated B (the reference's form); 'chunked' builds them chunk by chunk on each
  # device's rows of B (split as in 'grouped', §8.1). The same maths up to float rounding.
  config.train.similarity = 'grouped'
  # 'grouped' runs 'chunked' instead when the database has more label groups G than this
  # fraction of its items N (multi-label data with nearly distinct rows: the G-row group
  # table on every device would be as large as B).
  config.train.max_group_fraction = 0.5
  # Database rows per chunk of the 'chunked' form: one n × chunk (step) and |Ω| × chunk
  # (DCC sweep) block of S per device at a time.
  config.train.chunk_rows = 16384
  # BatchNorm statistics per device (as unsynchronised data-parallel PyTorch) instead of
  # over the global batch.
  config.train.per_device_batch_norm = False


def _optim_fields(config: ml_collections.ConfigDict):
  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 0.05
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.lr_decay_fraction = 0.9  # lr × factor from outer iteration ⌊0.9·T⌋ (OPEN)
  config.optim.lr_decay_factor = 0.1
  # parameter group → learning-rate multiplier (the paper uses one lr for all). From scratch
  # the backbone wants a large lr, but W sees ‖v‖² ≈ D/2 and would overshoot with it.
  config.optim.lr_multipliers = ml_collections.ConfigDict({'attribute_codec': 0.02})


def _eval_fields(config: ml_collections.ConfigDict):
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 256
  config.eval.every_iterations = 5  # 0: only after the last outer iteration


def _checkpoint_fields(config: ml_collections.ConfigDict):
  # WORKDIR/checkpoints: saved at every outer iteration's end, and every N steps if N > 0;
  # the latest `keep` plus the best by map_learned_db are kept. A rerun continues.
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 0
  config.checkpoint.keep = 3
  config.checkpoint.async_save = True


def _log_fields(config: ml_collections.ConfigDict):
  # WORKDIR/metrics.jsonl and WORKDIR/tensorboard (process 0); a console line every N steps.
  config.log = ml_collections.ConfigDict()
  config.log.every_steps = 50
  config.log.tensorboard = True
  config.log.report = True  # WORKDIR/report/: figures and index.html at the end
