"""This process's resident memory on Linux, for the host-memory benchmarks."""


def status_mib(field: str) -> float:
  """A /proc/self/status size field (VmRSS, VmHWM, …) in MiB."""
  with open('/proc/self/status') as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field + ':')) / 1024


def reset_peak():
  """The peak resident size (VmHWM) starts again from the current one."""
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')
