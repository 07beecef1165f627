"""Per-day counts that every stage adds to, and the invariant they must satisfy."""
import collections
import dataclasses
import typing

__all__ = ['DayStats', 'merged']


@dataclasses.dataclass
class DayStats:
  rows_in: int = 0
  rows_written: int = 0
  rows_rejected: int = 0
  rows_duplicate: int = 0
  rows_forgotten: int = 0   # ingest: rows of users a forget request erased (pipelines/forget.py)
  rejected: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  flags: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def add(self, other: 'DayStats') -> 'DayStats':
    self.rows_in += other.rows_in
    self.rows_written += other.rows_written
    self.rows_rejected += other.rows_rejected
    self.rows_duplicate += other.rows_duplicate
    self.rows_forgotten += other.rows_forgotten
    self.rejected.update(other.rejected)
    self.flags.update(other.flags)
    return self

  def balance_error(self) -> str | None:
    """None when rows_in = written + rejected + duplicate (+ forgotten), else a message saying
    by how much."""
    out = self.rows_written + self.rows_rejected + self.rows_duplicate + self.rows_forgotten
    if out == self.rows_in:
      return None
    forgotten = f' + forgotten {self.rows_forgotten}' if self.rows_forgotten else ''
    return (f'accounting mismatch: rows_in {self.rows_in} != written {self.rows_written} + '
            f'rejected {self.rows_rejected} + duplicate {self.rows_duplicate}{forgotten} (= {out})')


def merged(parts: typing.Iterable[DayStats]) -> DayStats:
  """The sum of `parts` (a combine function: Beam applies it to partial sums too)."""
  total = DayStats()
  for part in parts:
    total.add(part)
  return total
