"""What every benchmark shares: each contender runs in its own process, times only its own work,
and reports its peak RSS; the best of --repeat runs counts. The libraries a contender names with
@preload are imported before its clock starts (Beam takes 1-3 s to import, DuckDB a tenth of
that): `seconds` is the job; `process_seconds`, measured by the parent, is the whole command, and
`startup_seconds` the time from exec to the first row read (for a contender that reads through
pyarrow's ParquetFile, as eventferry does: its first batch; for DuckDB and Polars, which read at
once, to their clock's start). `--cores 1` pins every contender to one core (taskset) and one
thread (DuckDB, Polars, pyarrow), so the figures hold on a machine other work shares."""
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
CORES_ENV = 'EVENTFERRY_BENCH_CORES'
EXEC_AT_ENV = 'EVENTFERRY_BENCH_EXEC_AT'


def threads() -> int:
  """Threads a contender's engine may use: 1 under --cores 1, else 2 (this machine's cores)."""
  return 1 if os.environ.get(CORES_ENV) == '1' else 2


def _one_core() -> None:
  import pyarrow as pa
  pa.set_cpu_count(1)
  pa.set_io_thread_count(1)


def _stamp_first_read(stamps: dict) -> None:
  """Records when the contender first reads rows through pyarrow's ParquetFile."""
  import pyarrow.parquet as pq
  iter_batches = pq.ParquetFile.iter_batches

  def stamped(self, *args, **kwargs):
    stamps.setdefault('first_read', time.time())
    return iter_batches(self, *args, **kwargs)
  pq.ParquetFile.iter_batches = stamped


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
  if threads() == 1:
    _one_core()
  stamps: dict = {}
  _stamp_first_read(stamps)
  for module in getattr(contenders[name], 'preload', ()):
    importlib.import_module(module)
  exec_at = float(os.environ.get(EXEC_AT_ENV, time.time()))
  began = time.time()
  start, cpu = time.perf_counter(), time.process_time()
  counts = contenders[name](source, out)
  seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
  print(json.dumps({'contender': name, 'seconds': seconds, 'peak_rss_mib': peak_rss_mib(),
                    'cpu_seconds': cpu, 'startup_seconds': stamps.get('first_read', began) - exec_at,
                    **counts}))


def measure(module: str, name: str, source: str, workdir: str, repeat: int,
            cores: int | None = None) -> dict:
  best = None
  env = dict(ALLOCATOR_ENV)
  pin = []
  if cores == 1:
    env.update({CORES_ENV: '1', 'POLARS_MAX_THREADS': '1', 'OMP_NUM_THREADS': '1'})
    pin = ['taskset', '-c', '0']
  for i in range(repeat):
    out = os.path.join(workdir, f'{name}-{i}')
    shutil.rmtree(out, ignore_errors=True)   # a fresh output for every run
    env[EXEC_AT_ENV] = repr(time.time())
    start = time.perf_counter()
    proc = subprocess.run(pin + [sys.executable, '-m', module, '--child', name, '--source', source,
                                 '--out', out], capture_output=True, text=True, env=env)
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
        f"{'start-up':>8} {'events/s':>10} {'peak MiB':>9}")
  for x in results.values():
    print(f"{x['contender']:<15} {x[rows_key]:>10,} {x['seconds']:>8.2f} {x['cpu_seconds']:>7.2f} "
          f"{x['process_seconds']:>8.2f} {x['startup_seconds']:>8.2f} "
          f"{x[rows_key] / x['seconds']:>10,.0f} {x['peak_rss_mib']:>9.0f}")


def conditions(results: dict) -> str:
  """How the figures were taken: cores, repeats and the load average before the run."""
  cores = 'one core (taskset -c 0, one thread each)' if results['cores'] == 1 else \
      f'{os.cpu_count()} cores'
  return f"best of {results['repeat']}, {cores}, load average {results['load']:.2f} before"


def verdict(label: str, value: float, target: str, ok: bool) -> str:
  return f'{label:<24} {value:>12,.2f}  target {target:<12} {"PASS" if ok else "MISS"}'


def run_all(argv: list[str], description: str, module: str, contenders: dict, prepare) -> dict | None:
  """The benchmark command line: --events, --repeat, --workdir, --cores, --only, --files. In a
  contender's own process (--child) runs it and returns None; otherwise prepares the input with
  `prepare(workdir, events[, files=])` and returns every contender's best result."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--events', type=int, default=1_000_000)
  parser.add_argument('--repeat', type=int, default=1, help='runs per contender; the best counts')
  parser.add_argument('--workdir', default=None, help='keeps the generated input between runs')
  parser.add_argument('--cores', type=int, choices=[1], default=None,
                      help='1: pin every contender to one core and one thread')
  parser.add_argument('--only', default=None, help='comma-separated contenders to run')
  parser.add_argument('--files', type=int, default=None,
                      help="files in the generated source day (the import's; default 4)")
  parser.add_argument('--child'), parser.add_argument('--source'), parser.add_argument('--out')
  args = parser.parse_args(argv)
  if args.child:
    child(contenders, args.child, args.source, args.out)
    return None
  workdir = args.workdir or tempfile.mkdtemp(prefix='eventferry-bench-')
  source = prepare(workdir, args.events, **({'files': args.files} if args.files else {}))
  names = args.only.split(',') if args.only else list(contenders)
  unknown = set(names) - set(contenders)
  if unknown:
    sys.exit(f'--only: no contender {", ".join(sorted(unknown))} (there are {", ".join(contenders)})')
  load = os.getloadavg()[0]
  results = {name: measure(module, name, source, workdir, args.repeat, args.cores)
             for name in names}
  results.update(repeat=args.repeat, cores=args.cores, load=load, files=args.files)
  return results
