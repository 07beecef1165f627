"""What operators see: Beam counters in run reports on any runner, and --log_format json."""
import datetime
import json

import pytest
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipelines import logs, samples
from tests.conftest import run_cli

pytestmark = pytest.mark.engine

DAY = datetime.date(2023, 1, 1)


def test_a_runner_without_metrics_gives_an_empty_report_section():
  assert logs.counters(PipelineResult(PipelineState.DONE)) == {}


def test_json_logs_are_one_object_per_line_and_reports_carry_beam_counters(tmp_path):
  bucket, lake, dest = str(tmp_path / 'bucket'), tmp_path / 'lake', tmp_path / 'out'
  samples.write_day(bucket, DAY, samples.events(DAY, 500), files=2)
  samples.write_day(bucket, DAY + datetime.timedelta(days=1), samples.events(DAY, 10), files=1,
                    success=False)
  proc = run_cli('pipelines.backfill', 'import', '--source', bucket, '--lake', str(lake),
                 '--from_date', str(DAY), '--to_date', '2023-01-02', '--log_format', 'json',
                 '--report', str(tmp_path / 'backfill.json'), check=False)
  assert proc.returncode == 1
  records = [json.loads(line) for line in proc.stderr.splitlines()]
  assert records and all({'time', 'severity', 'logger', 'message'} <= set(r) for r in records)
  progress = [r for r in records if r['message'].startswith('backfill import:')]
  assert progress[-1]['days_done'] == 2 and progress[-1]['not_published'] == 1
  summary = json.loads((tmp_path / 'backfill.json').read_text())
  assert [d['status'] for d in summary['days']] == ['published', 'failed']

  (run,) = (lake / '_runs').iterdir()
  metrics = json.loads(run.read_text())['metrics']
  assert metrics['eventferry.read.rows_in'] == summary['days'][0]['rows_in']
  assert metrics['eventferry.commit.days_published'] == 1

  out = run_cli('pipelines.export_events', '--lake', str(lake), '--dest', str(dest), '--date',
                str(DAY), '--report', str(tmp_path / 'export.json'))
  report = json.loads((tmp_path / 'export.json').read_text())
  assert report['metrics']['eventferry.export.rows_exported'] == report['days'][0]['rows'] > 0
  assert (dest / '_eventferry' / 'runs' / f'{report["run_id"]}.json').exists()
  assert 'Report: ' in out.stdout

  bad = run_cli('pipelines.import_events', '--lake', str(lake), '--log_format', 'json',
                check=False)
  assert bad.returncode == 2
  assert json.loads(bad.stderr)['message'].startswith('--source is required')
