"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE in the Dockerfile): runs the pipeline
that the template names in EVENTFERRY_PIPELINE (`./run.sh dataflow build PIPELINE` sets it), with
the template's parameters as its flags."""
import os
import sys

from pipelines import backfill, export_events, import_events, ingest
from pipelines import options as opts

RUN = {'import': import_events.run, 'export': export_events.run, 'backfill': backfill.run,
       'ingest': ingest.run}

if __name__ == '__main__':
  sys.exit(opts.main_guard(RUN[os.environ['EVENTFERRY_PIPELINE']]))
