"""Entry points: one thin module per pipeline, each with a `build(pipeline, plan)`.

Arrow's allocators hand freed pages back to the OS at once, so every new batch faults fresh pages
in; on a 2-core VM that cost more than some of the compute (1M-event import, plain pyarrow floor:
5.7-6.2 s -> 4.2-4.8 s with jemalloc keeping its pages). But kept pages were not reused: jemalloc
will not split a free extent more than 64x larger than the request (lg_extent_max_active_fit 6),
so the large extents one dedupe shard freed sat idle while the next shard faulted in new ones, and
a 10M-event import grew ~300 MB per shard (4.9 GB peak against 1.0 GB at 1M). Letting any free
extent serve a request bounds it at 1.7 GB with no purging (decaying pages after 1 s: 1.5 GB, but
the 1M import ran ~20% slower). These must be set before pyarrow loads; an explicit setting in the
environment wins. Dataflow workers start the SDK harness before any of our code, so the
Dockerfile sets the same values as ENV (tests/test_dataflow.py checks the two agree).

A command (`python -m pipelines.X`, as run.sh runs them) can be stopped with Ctrl-C while Python
still loads Beam and pyarrow, before options.main_guard takes over SIGINT: it then ends with one
line and exit code 130, like a stop later on, instead of a KeyboardInterrupt traceback.
"""
import json
import os
import signal
import sys

ALLOCATOR_ENV = {
    'ARROW_DEFAULT_MEMORY_POOL': 'jemalloc',
    'JE_ARROW_MALLOC_CONF': 'dirty_decay_ms:-1,muzzy_decay_ms:-1,lg_extent_max_active_fit:30',
}
for _name, _value in ALLOCATOR_ENV.items():
  os.environ.setdefault(_name, _value)


def _stopped_while_starting(signum, frame):
  message = 'interrupted (SIGINT) while starting: nothing was done'
  args = ' '.join(sys.argv)
  if '--log_format=json' in args or '--log_format json' in args:   # as logs.format_of reads it
    sys.stderr.write(json.dumps({'severity': 'ERROR', 'logger': 'eventferry', 'message': message}) + '\n')
  else:
    sys.stderr.write(f'error: {message}\n')
  os._exit(130)


if sys.argv[:1] == ['-m']:   # python -m pipelines.X, while it imports; main_guard restores it
  signal.signal(signal.SIGINT, _stopped_while_starting)

import transforms  # noqa: E402,F401  Beam, imported without the clients a run does not use (transforms/compat/startup.py)
