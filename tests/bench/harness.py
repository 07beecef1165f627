"""What every benchmark shares: each contender runs in its own process, times only its own work,
and reports its peak RSS; the best of --repeat runs counts. The libraries a contender names with
@preload are imported before its clock starts (Beam takes 1-3 s to import, DuckDB a tenth of
that): `seconds` is the job; `process_seconds`, measured by the parent, is the whole command."""
import argparse
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import pipelines  # noqa: F401,E402 - puts the pipelines' allocator settings into os.environ

# Every contender runs with the allocator settings the pipelines use (see pipelines/__init__.py).
ALLOCATOR_ENV = dict(os.environ)


def peak_rss_mib() -> float:
  """This process's peak RSS. Linux's ru_maxrss survives fork and exec, so a child of a parent
  that had generated the input would report at least the parent's size; VmHWM belongs to the
  process's own memory map, which exec replaces."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # no /proc: the closest


def preload(*modules: str):
  """Marks a contender's libraries, imported before its clock starts."""
  def mark(fn):
    fn.preload = modules
    return fn
  return mark


def child(contenders: dict, name: str, source: str, out: str) -> None:
  """Runs one contender in this process and prints its result as a JSON line."""
  os.makedirs(out, exist_ok=True)
  for module in getattr(contenders[name], 'preload', ()):
    importlib.import_module(module)
  start, cpu = time.perf_counter(), time.process_time()
  counts = contenders[name](source, out)
  seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
  print(json.dumps({'contender': name, 'seconds': seconds, 'peak_rss_mib': peak_rss_mib(),
                    'cpu_seconds': cpu, **counts}))


def measure(module: str, name: str, source: str, workdir: str, repeat: int) -> dict:
  best = None
  for i in range(repeat):
    out = os.path.join(workdir, f'{name}-{i}')
    shutil.rmtree(out, ignore_errors=True)   # a fresh output for every run
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, '-m', module, '--child', name, '--source', source,
                           '--out', out], capture_output=True, text=True, env=ALLOCATOR_ENV)
    if proc.returncode != 0:
      sys.exit(f'{name} failed:\n{proc.stderr[-3000:]}')
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result['process_seconds'] = time.perf_counter() - start
    if best is None or result['seconds'] < best['seconds']:
      best = result
  return best


def table(results: dict, rows_key: str = 'rows') -> None:
  """One line per contender: events, wall, CPU and whole-process seconds, events/s, peak RSS."""
  print(f"{'contender':<15} {'events':>10} {'seconds':>8} {'cpu s':>7} {'process':>8} "
        f"{'events/s':>10} {'peak MiB':>9}")
  for x in results.values():
    print(f"{x['contender']:<15} {x[rows_key]:>10,} {x['seconds']:>8.2f} {x['cpu_seconds']:>7.2f} "
          f"{x['process_seconds']:>8.2f} {x[rows_key] / x['seconds']:>10,.0f} "
          f"{x['peak_rss_mib']:>9.0f}")


def verdict(label: str, value: float, target: str, ok: bool) -> str:
  return f'{label:<24} {value:>12,.2f}  target {target:<12} {"PASS" if ok else "MISS"}'


def run_all(argv: list[str], description: str, module: str, contenders: dict, prepare) -> dict | None:
  """The benchmark command line: --events, --repeat, --workdir. In a contender's own process
  (--child) runs it and returns None; otherwise prepares the input with `prepare(workdir, events)`
  and returns every contender's best result."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--events', type=int, default=1_000_000)
  parser.add_argument('--repeat', type=int, default=1, help='runs per contender; the best counts')
  parser.add_argument('--workdir', default=None, help='keeps the generated input between runs')
  parser.add_argument('--child'), parser.add_argument('--source'), parser.add_argument('--out')
  args = parser.parse_args(argv)
  if args.child:
    child(contenders, args.child, args.source, args.out)
    return None
  workdir = args.workdir or tempfile.mkdtemp(prefix='eventferry-bench-')
  source = prepare(workdir, args.events)
  results = {name: measure(module, name, source, workdir, args.repeat) for name in contenders}
  results['repeat'] = args.repeat
  return results
