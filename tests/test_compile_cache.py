"""Where the main job keeps its compiled programs (the run itself: test_run.py)."""

from aah_jax.common import compile_cache


def test_the_flag_wins_then_the_environment_then_the_workdir(monkeypatch):
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  assert compile_cache.folder(None, 'runs/a') == 'runs/a/xla_cache'
  assert compile_cache.folder(None, 'gs://bucket/run') == 'gs://bucket/run/xla_cache'
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', '/shared/cache')
  assert compile_cache.folder(None, 'runs/a') == '/shared/cache'
  assert compile_cache.folder('/mine', 'runs/a') == '/mine'
  for off in ('none', 'None', ''):
    assert compile_cache.folder(off, 'runs/a') is None
