"""Writing outputs so that a failure never leaves a half-written one behind: a file or a
folder is written under a temporary name and renamed into place when complete."""

import json
import os
import shutil


def write_json(path: str, payload: dict):
  """Write atomically: a reader sees the old file or the whole new one."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)


def staging_folder(final: str) -> str:
  """An empty folder beside final to write its new contents into (``publish_folder``)."""
  tmp = f'{final}.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  return tmp


def publish_folder(tmp: str, final: str):
  """Replaces final by the complete folder tmp (the old one stays until then)."""
  old = f'{final}.old'
  shutil.rmtree(old, ignore_errors=True)
  if os.path.exists(final):
    os.replace(final, old)
  os.replace(tmp, final)
  shutil.rmtree(old, ignore_errors=True)
