"""One run of a planned job, for import, export, batch ingest and backfill alike:

    parse -> plan -> lock -> execute -> release -> report

Each command parses its flags, makes its plan and prints its report; `locked` does the middle
with one cleanup rule: whatever way the job ends without finishing (a failure, Ctrl-C, a fence
that stops a commit, exit 4), the run removes its own staging and releases the locks it holds
before the error goes on to main_guard. A job that finishes, or is handed over (a Flex Template
launch), releases them in its own last step, so that a job launched elsewhere does too.
"""
import typing

from transforms.lake import locks
from transforms.lake.commit import drop_staging

__all__ = ['Planned', 'locked']

T = typing.TypeVar('T')


class Planned(typing.Protocol):
  """What the skeleton needs of a plan: its run, its staging and the locks lock() put in it."""
  run_id: str
  locks: list[str]

  @property
  def staging(self) -> str: ...


def locked(p: Planned, lock: typing.Callable[[typing.Any], None], execute: typing.Callable[[], T]) -> T:
  """lock(p) (which fills p.locks, or raises LockedError holding none), then execute()."""
  lock(p)
  try:
    return execute()
  except BaseException:
    drop_staging(p.staging)
    locks.release(p.locks, p.run_id)
    raise
