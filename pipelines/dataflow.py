"""`./run.sh dataflow build|launch PIPELINE`: eventferry's Flex Templates, through gcloud.

  ./run.sh dataflow build import --image REGION-docker.pkg.dev/P/REPO/eventferry:2.77.0-1 \\
    --template gs://acme-lake/templates/import.json [--skip_image] [--print_only]
  ./run.sh dataflow launch import --template gs://acme-lake/templates/import.json \\
    --project P --region asia-northeast3 [--image IMAGE] [--job_name NAME] [--print_only] \\
    -- --source gs://customer/events --lake gs://acme-lake/events --date 2023-01-01

PIPELINE is import, export or backfill; the template's parameters are the pipeline's flags
(templates/PIPELINE/metadata.json). Each command is printed, then run unless --print_only. The
launch parameters are checked against the metadata's names and regexes before gcloud is called.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys

from pipelines import options as opts

__all__ = ['PIPELINES', 'ROOT', 'metadata_path', 'metadata', 'build_commands', 'parameters',
           'launch_command', 'run']

PIPELINES = ('import', 'export', 'backfill', 'ingest')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def metadata_path(pipeline: str) -> str:
  return os.path.join(ROOT, 'templates', pipeline, 'metadata.json')


def metadata(pipeline: str) -> dict:
  with open(metadata_path(pipeline)) as f:
    return json.load(f)


def build_commands(a) -> list[list[str]]:
  image = [] if a.skip_image else [['docker', 'build', '-t', a.image, ROOT],
                                   ['docker', 'push', a.image]]
  return image + [['gcloud', 'dataflow', 'flex-template', 'build', a.template,
                   f'--image={a.image}', '--sdk-language=PYTHON',
                   f'--metadata-file={metadata_path(a.pipeline)}',
                   f'--env=EVENTFERRY_PIPELINE={a.pipeline}']]


def parameters(pipeline: str, flags: list[str]) -> dict[str, str]:
  """--name value / --name=value / --switch -> {name: value}, checked against the metadata."""
  known = {p['name']: p for p in metadata(pipeline)['parameters']}
  out, i = {}, 0
  while i < len(flags):
    flag = flags[i]
    if not flag.startswith('--'):
      raise opts.UsageError(f'unexpected argument {flag!r} after --: every value needs its --flag')
    name, eq, value = flag[2:].partition('=')
    if not eq and (i + 1 == len(flags) or flags[i + 1].startswith('--')):
      value = 'true'                     # a bare switch: --force
    elif not eq:
      value, i = flags[i + 1], i + 1
    i += 1
    if name not in known:
      raise opts.UsageError(f'--{name} is not a parameter of the {pipeline} template: see '
                            f'{metadata_path(pipeline)}')
    for regex in known[name].get('regexes', []):
      if not re.fullmatch(regex, value):
        raise opts.UsageError(f'--{name} {value!r} does not match {regex} '
                              f'({known[name]["helpText"]})')
    out[name] = value
  missing = [n for n, p in known.items() if not p['isOptional'] and n not in out]
  if missing:
    raise opts.UsageError(f'--{missing[0]} is required by the {pipeline} template')
  return out


def launch_command(a, params: dict[str, str]) -> list[str]:
  if a.image:
    params = {**params, 'sdk_container_image': a.image}   # workers run the launcher's image
  values = list(params.values())
  sep = ',' if not any(',' in v for v in values) else '~'   # gcloud's ^~^ alternate delimiter
  joined = ('' if sep == ',' else '^~^') + sep.join(f'{k}={v}' for k, v in params.items())
  cmd = ['gcloud', 'dataflow', 'flex-template', 'run', a.job_name or f'eventferry-{a.pipeline}',
         f'--template-file-gcs-location={a.template}', f'--region={a.region}']
  if a.project:
    cmd.append(f'--project={a.project}')
  return cmd + [f'--parameters={joined}']


def run(argv: list[str]) -> int:
  cut = argv.index('--') if '--' in argv else len(argv)
  ours, flags = argv[:cut], argv[cut + 1:]
  parser = argparse.ArgumentParser(prog='./run.sh dataflow', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('action', choices=('build', 'launch'))
  parser.add_argument('pipeline', choices=PIPELINES)
  parser.add_argument('--template', required=True, help='gs:// path of the template spec file')
  parser.add_argument('--image', help='container image (build: required)')
  parser.add_argument('--skip_image', action='store_true', help='build: the image exists')
  parser.add_argument('--project', help='launch: Google Cloud project')
  parser.add_argument('--region', help='launch: Dataflow region, e.g. asia-northeast3')
  parser.add_argument('--job_name', help='launch: job name (default eventferry-PIPELINE)')
  parser.add_argument('--print_only', action='store_true', help='print the commands, run nothing')
  a = parser.parse_args(ours)
  if not a.template.startswith('gs://'):
    raise opts.UsageError(f'--template {a.template!r}: a gs:// path, e.g. gs://bucket/t.json')
  if a.action == 'build':
    if not a.image:
      raise opts.UsageError('--image is required: e.g. --image REGION-docker.pkg.dev/P/R/eventferry:1')
    commands = build_commands(a)
  else:
    if not a.region:
      raise opts.UsageError('--region is required: e.g. --region asia-northeast3')
    commands = [launch_command(a, parameters(a.pipeline, flags))]
  for cmd in commands:
    print('$ ' + shlex.join(cmd), flush=True)
    if not a.print_only:
      code = subprocess.call(cmd)
      if code:
        return code
  return 0


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
