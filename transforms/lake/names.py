"""Every name eventferry gives a file or folder on a store, in one place.

A committed day (of the lake, or of an export folder) holds its data files, `_manifest.json` and
`_SUCCESS`, written last. Everything else the project writes lies under names starting with `_`,
which readers of the lake skip: the staging of runs, the dead letters, the run reports, and the
state of locks, export history and folder claims.
"""

__all__ = ['SUCCESS', 'MANIFEST', 'day_markers', 'STAGING_DIR', 'SHUFFLE_DIR', 'REJECTED_DIR',
           'RUNS_DIR', 'ingest_run', 'STATE_DIR', 'LOCKS_DIR', 'LOCK_SUFFIX', 'HISTORY', 'CLAIMS_DIR',
           'EXPORT_RUNS_DIR', 'DELIVERIES_DIR', 'FORGET_DIR', 'MAINTAIN_DIR', 'SALT']

SUCCESS = '_SUCCESS'           # a day's folder is complete and may be read
MANIFEST = '_manifest.json'    # files, rows, bytes, sha256, schema fingerprint, run id, source


def day_markers(yyyymmdd: str) -> tuple[str, str]:
  """(manifest, success) of one day in a flat export folder, where days lie side by side."""
  return f'_manifest-{yyyymmdd}.json', f'{SUCCESS}-{yyyymmdd}'


STAGING_DIR = '_staging'       # ROOT/_staging/RUN/: a run's files before the commit promotes them
SHUFFLE_DIR = '_shuffle'       # _staging/RUN/_shuffle/: the import's de-duplication spills
REJECTED_DIR = '_rejected'     # LAKE/_rejected/dt=D/: the day's dead letters
RUNS_DIR = '_runs'             # LAKE/_runs/: the import's and ingest's run reports


def ingest_run(run_id: str) -> str:
  """An ingest run's folder under _staging/ and _runs/."""
  return f'ingest-{run_id}'


STATE_DIR = '_eventferry'      # ROOT/_eventferry/: what follows, shared by runs of a lake or destination
LOCKS_DIR = 'locks'            # one file per partition a run holds
LOCK_SUFFIX = '.lock'
HISTORY = 'export_history.json'   # which lake commit of each day was exported last
CLAIMS_DIR = 'folders'         # run-scoped export folders, each claimed for one day
EXPORT_RUNS_DIR = 'runs'       # the export's run reports
DELIVERIES_DIR = 'deliveries'  # LAKE/_eventferry/deliveries/DT/: each day's deliveries, for forget
MAINTAIN_DIR = 'maintain'     # LAKE/_eventferry/maintain/: maintain's run reports (Iceberg lake)
FORGET_DIR = 'forget'          # LAKE/_eventferry/forget/: one audit file per forget request
SALT = '_salt'                 # ... and the lake's salt for the ids' hashes
