"""What every benchmark shares: each contender runs in its own process, times only its own work,
and reports its peak RSS; the best of --repeat runs counts."""
import json
import os
import resource
import subprocess
import sys
import time

# Every contender runs with the allocator settings the pipelines use (see pipelines/__init__.py).
ALLOCATOR_ENV = {**os.environ, 'ARROW_DEFAULT_MEMORY_POOL': 'jemalloc',
                 'JE_ARROW_MALLOC_CONF': 'dirty_decay_ms:-1,muzzy_decay_ms:-1'}


def child(contenders: dict, name: str, source: str, out: str) -> None:
  """Runs one contender in this process and prints its result as a JSON line."""
  os.makedirs(out, exist_ok=True)
  start = time.perf_counter()
  counts = contenders[name](source, out)
  seconds = time.perf_counter() - start
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps({'contender': name, 'seconds': seconds, 'peak_rss_mib': rss, **counts}))


def measure(module: str, name: str, source: str, workdir: str, repeat: int) -> dict:
  best = None
  for i in range(repeat):
    out = os.path.join(workdir, f'{name}-{i}')
    proc = subprocess.run([sys.executable, '-m', module, '--child', name, '--source', source,
                           '--out', out], capture_output=True, text=True, env=ALLOCATOR_ENV)
    if proc.returncode != 0:
      sys.exit(f'{name} failed:\n{proc.stderr[-3000:]}')
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if best is None or result['seconds'] < best['seconds']:
      best = result
  return best


def verdict(label: str, value: float, target: str, ok: bool) -> str:
  return f'{label:<24} {value:>12,.2f}  target {target:<12} {"PASS" if ok else "MISS"}'
