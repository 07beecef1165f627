"""Dataflow, offline: the Beam pin agrees everywhere, the Flex Template metadata matches the
pipelines' options, and DataflowRunner (--dry_run=True) builds each pipeline's job from local data."""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tarfile

import apache_beam as beam
import pytest

from pipelines import backfill, dataflow, export_events, import_events, ingest, samples
from pipelines import options as opts
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.process

DATAFLOW = ['--runner=DataflowRunner', '--dry_run=True', '--project=eventferry-test',
            '--region=us-central1', '--temp_location=gs://eventferry-test/tmp']
DAY = datetime.date(2023, 1, 1)


def read(name):
  with open(os.path.join(ROOT, name)) as f:
    return f.read()


def test_beam_is_pinned_to_one_version_everywhere():
  version = re.search(r"BEAM_VERSION = '([0-9.]+)'", read('setup.py')).group(1)
  assert re.findall(r'^FROM apache/beam_python3\.11_sdk:(\S+)$', read('Dockerfile'), re.M) == [version]
  assert f'Beam is pinned to {version}' in read('README.md')
  assert beam.__version__ == version


def test_image_sets_the_allocator_settings_local_runs_set():
  """Workers from the image must run with the allocator settings a local run uses."""
  from pipelines import ALLOCATOR_ENV
  env = re.search(r'^ENV ARROW_DEFAULT_MEMORY_POOL=.*?(?<!\\)\n', read('Dockerfile'), re.M | re.S)
  image = dict(re.findall(r'(\w+)=(\S+)', env.group(0)))
  assert image == ALLOCATOR_ENV


def test_setup_packages_what_workers_import(tmp_path):
  subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(tmp_path)], cwd=ROOT,
                 check=True, capture_output=True)
  (sdist,) = tmp_path.iterdir()
  with tarfile.open(sdist) as tar:
    names = {n.split('/', 1)[1] for n in tar.getnames() if '/' in n}
  for module in ('pipelines/backfill.py', 'pipelines/import_events.py', 'transforms/lake/commit.py',
                 'schemas/reports.py'):
    assert module in names


def test_build_prints_the_image_and_template_commands(capsys):
  assert dataflow.run(['build', 'backfill', '--template', 'gs://t/backfill.json', '--image',
                       'img:1', '--print_only']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[:2] == [f'$ docker build -t img:1 {ROOT}', '$ docker push img:1']
  assert lines[2].startswith('$ gcloud dataflow flex-template build gs://t/backfill.json '
                             '--image=img:1 --sdk-language=PYTHON --metadata-file=')
  assert lines[2].endswith('templates/backfill/metadata.json --env=EVENTFERRY_PIPELINE=backfill')


def dests(option_class) -> dict[str, argparse.Action]:
  parser = argparse.ArgumentParser()
  option_class._add_argparse_args(parser)
  return {a.dest: a for a in parser._actions if a.option_strings and a.dest != 'help'}


LOGGING = dests(opts.LoggingOptions)
ACCEPTED = {
    'import': {**dests(import_events.ImportOptions), **LOGGING},
    'export': {**dests(export_events.ExportOptions), **LOGGING},
    'backfill': {**dests(import_events.ImportOptions), **dests(export_events.ExportOptions),
                 **dests(backfill.BackfillOptions), **LOGGING},
    'ingest': {**dests(ingest.IngestOptions), **LOGGING},
}
REQUIRED = {
    'import': set(import_events.REQUIRED),
    'export': set(export_events.REQUIRED),
    'backfill': set(backfill.REQUIRED) | (set(import_events.REQUIRED) & set(export_events.REQUIRED)),
    'ingest': set(ingest.REQUIRED),
}


@pytest.mark.parametrize('pipeline', dataflow.PIPELINES)
def test_template_parameters_are_the_pipelines_options(pipeline):
  meta = dataflow.metadata(pipeline)
  params = {p['name']: p for p in meta['parameters']}
  assert len(params) == len(meta['parameters'])
  assert set(params) <= set(ACCEPTED[pipeline]), set(params) - set(ACCEPTED[pipeline])
  required = {n for n, p in params.items() if not p['isOptional']}
  assert required == REQUIRED[pipeline]
  for name, p in params.items():
    assert p['helpText'] and p['label']
    for regex in p.get('regexes', []):
      re.compile(regex)
    typed = ACCEPTED[pipeline][name].type in (int, float) or name.endswith('date')
    assert not typed or p.get('regexes'), f'{name} takes a number or date: give it a regex'


def test_launch_checks_parameters_against_the_metadata(capsys):
  base = ['launch', 'import', '--template', 'gs://t/import.json', '--region', 'asia-northeast3',
          '--image', 'img:1', '--print_only', '--']
  assert dataflow.run(base + ['--source', 'gs://c/events', '--lake', 'gs://l/lake']) == 0
  out = capsys.readouterr().out
  assert out.startswith('$ gcloud dataflow flex-template run eventferry-import ')
  assert '--parameters=source=gs://c/events,lake=gs://l/lake,sdk_container_image=img:1' in out
  with pytest.raises(opts.UsageError, match='--shards .* does not match'):
    dataflow.run(base + ['--source', 'gs://c/e', '--lake', 'gs://l/l', '--shards', 'many'])
  with pytest.raises(opts.UsageError, match='--lake is required'):
    dataflow.run(base + ['--source', 'gs://c/e'])
  with pytest.raises(opts.UsageError, match='--nope is not a parameter'):
    dataflow.run(base + ['--source', 'gs://c/e', '--lake', 'gs://l/l', '--nope', '1'])


@pytest.fixture(scope='module')
def local(tmp_path_factory):
  root = tmp_path_factory.mktemp('df')
  bucket, lake = str(root / 'bucket'), str(root / 'lake')
  samples.write_day(bucket, DAY, samples.events(DAY, 300), files=2)
  run_cli('pipelines.import_events', '--source', bucket, '--date', str(DAY), '--lake', lake)
  return root, bucket, lake


def transform_names(result) -> set[str]:
  return {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}


def test_dataflow_builds_the_import_job(local):
  root, bucket, lake = local
  options = opts.parse(import_events.ImportOptions, ['--source', bucket, '--lake', lake,
                                                     '--date', str(DAY), *DATAFLOW], '')
  p = import_events.plan(options.view_as(import_events.ImportOptions))
  pipeline = beam.Pipeline(options=options)
  import_events.build(pipeline, p)
  names = transform_names(pipeline.run())
  assert {'ReadDays', 'ValidateEvents', 'DedupeEvents', 'CommitDays', 'WriteRunReport'} <= names


def test_dataflow_builds_the_export_job(local):
  root, _, lake = local
  options = opts.parse(export_events.ExportOptions, ['--lake', lake, '--dest', str(root / 'out'),
                                                     '--date', str(DAY), *DATAFLOW], '')
  p = export_events.plan(options.view_as(export_events.ExportOptions))
  pipeline = beam.Pipeline(options=options)
  export_events.build(pipeline, p)
  assert {'ExportFiles', 'CommitExportDay', 'RecordExport'} <= transform_names(pipeline.run())


def test_dataflow_builds_a_backfill_job_and_hands_it_over(local):
  root, bucket, lake = local
  options = opts.parse(import_events.ImportOptions, ['--source', bucket, '--lake', lake,
                                                     '--from_date', str(DAY), '--to_date',
                                                     str(DAY), *DATAFLOW], '')
  o = options.view_as(import_events.ImportOptions)
  kind = backfill.ImportDays()
  days = [backfill.judge(kind, o, DAY)]
  assert days[0].action == 'skip'     # the fixture imported it
  kind.run(options, o, days)
  assert days[0].status == 'submitted'
  assert not os.listdir(os.path.join(lake, '_eventferry', 'locks'))


def test_the_import_command_hands_a_dataflow_job_over_without_waiting(local):
  root, bucket, lake = local
  before = json.loads(open(os.path.join(lake, 'dt=2023-01-01', '_manifest.json')).read())
  proc = run_cli('pipelines.import_events', '--source', bucket, '--date', str(DAY), '--lake',
                 lake, *DATAFLOW)
  assert 'handed over to DataflowRunner' in proc.stdout
  after = json.loads(open(os.path.join(lake, 'dt=2023-01-01', '_manifest.json')).read())
  assert after == before      # nothing ran
  assert not os.listdir(os.path.join(lake, '_eventferry', 'locks'))


def test_the_export_command_hands_a_dataflow_job_over_without_waiting(local):
  root, _, lake = local
  dest = root / 'handed-over'
  proc = run_cli('pipelines.export_events', '--lake', lake, '--dest', str(dest), '--date',
                 str(DAY), *DATAFLOW)
  assert 'export job' in proc.stdout and 'handed over to DataflowRunner' in proc.stdout
  state = dest / '_eventferry'
  assert not (state / 'export_history.json').exists()      # the job's last step records it
  assert not os.listdir(state / 'locks')


def test_dataflow_builds_the_streaming_ingest_job(tmp_path):
  proc = run_cli('pipelines.ingest', '--subscription', 'projects/eventferry-test/subscriptions/raw',
                 '--lake', 'gs://eventferry-test/lake', '--streaming', *DATAFLOW)
  assert 'handed over to DataflowRunner' in proc.stdout
  options = opts.parse(ingest.IngestOptions, ['--input', str(tmp_path / '*.jsonl'), '--lake',
                                              str(tmp_path / 'lake'), *DATAFLOW], '')
  pipeline = beam.Pipeline(options=options)
  ingest.build(pipeline, options.view_as(ingest.IngestOptions), False, 'r1')
  assert {'MatchFiles', 'ReadJsonLines', 'Ingest/SplitDays', 'Ingest/WriteDays'} <= \
      transform_names(pipeline.run())

