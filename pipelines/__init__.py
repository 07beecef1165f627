"""Entry points: one thin module per pipeline, each with a `build(pipeline, plan)`.

Arrow's allocators hand freed pages back to the OS at once, so every new batch faults fresh pages
in; on a 2-core VM that cost more than some of the compute (1M-event import, plain pyarrow floor:
5.7-6.2 s -> 4.2-4.8 s with jemalloc keeping its pages). These must be set before pyarrow loads;
an explicit setting in the environment wins. Dataflow workers get the same from the Dockerfile.
"""
import os

os.environ.setdefault('ARROW_DEFAULT_MEMORY_POOL', 'jemalloc')
os.environ.setdefault('JE_ARROW_MALLOC_CONF', 'dirty_decay_ms:-1,muzzy_decay_ms:-1')
