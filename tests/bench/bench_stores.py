"""Peak memory of writing to each store: `./run.sh bench stores [--events N] [--format jsonl]`.

Imports N generated events (default 1.5M: about 1 GiB as uncompressed JSON lines) into a local
lake once, starts each store's loopback server (tests/servers.py), and runs the real export
command to it in its own process, printing seconds, bytes written and that process's peak RSS.

`--layer store [--mib 1024] [--repeat 2]`: the store layer alone. Each store gets one object of
--mib MiB written in 1 MiB pieces through fs.open_write (ours) and through Beam's
FileSystems.create (beam), each in a fresh process; prints that process's RSS before the write
and its peak. Not a timed test: figures depend on the machine (README: Clouds).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from tests import servers
from tests.bench import harness
from tests.bench.bench_export import DAY, prepare

STORES = ('local', 's3', 'gcs', 'azure', 'sftp')


def start(store: str, workdir: str):
  """(server or None, dest root, flags, env) for one store, its bucket or container created."""
  if store == 'local':
    return None, os.path.join(workdir, 'dest-local'), [], {}
  if store == 's3':
    import boto3
    s = servers.moto(workdir)
    boto3.client('s3', endpoint_url=s.endpoint, region_name='us-east-1',
                 aws_access_key_id=servers.MOTO_KEY,
                 aws_secret_access_key=servers.MOTO_SECRET).create_bucket(Bucket='bench')
    return s, 's3://bench/dest', ['--s3_endpoint_url', s.endpoint, '--s3_region_name',
                                  'us-east-1', '--s3_access_key_id', servers.MOTO_KEY,
                                  '--s3_secret_access_key', servers.MOTO_SECRET], {}
  if store == 'gcs':
    from google.cloud import storage as gcs
    s = servers.gcs(workdir)
    os.environ['STORAGE_EMULATOR_HOST'] = s.endpoint
    gcs.Client.create_anonymous_client().create_bucket('bench')
    return s, 'gs://bench/dest', [], {'STORAGE_EMULATOR_HOST': s.endpoint}
  if store == 'azure':
    from azure.storage.blob import BlobServiceClient
    s = servers.azurite(workdir)
    conn = servers.azurite_connection_string(s.port)
    BlobServiceClient.from_connection_string(conn).create_container('bench')
    return s, 'azfs://devstoreaccount1/bench/dest', ['--azure_connection_string', conn], {}
  s = servers.sftp(workdir, 'bench', 'bench-password')
  return s, f'sftp://bench@{servers.HOST}:{s.port}/dest', [
      '--sftp_password', 'bench-password', '--sftp_known_hosts',
      os.path.join(workdir, 'known_hosts')], {}


def store_child(argv: list[str]) -> None:
  """Writes one object of MIB MiB to PATH with WRITER (ours | beam); prints seconds and RSS."""
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import PipelineOptions
  from transforms.stores import fs
  writer, path, mib, flags = argv[0], argv[1], int(argv[2]), argv[3:]
  fs.configure(PipelineOptions(flags))
  piece = os.urandom(1 << 20)
  before = harness.peak_rss_mib()
  start_t = time.perf_counter()
  with (fs.open_write(path) if writer == 'ours' else
        FileSystems.create(path, compression_type=fs.RAW)) as f:
    for _ in range(mib):
      f.write(piece)
  seconds = time.perf_counter() - start_t
  size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
  fs.delete([path])   # the emulators keep objects in memory
  print(json.dumps({'seconds': seconds, 'mib': size / (1 << 20), 'rss_before_mib': before,
                    'peak_rss_mib': harness.peak_rss_mib()}))


def store_layer(a, workdir: str) -> None:
  print(f'{"store":<6} {"writer":<6} {"MiB":>6} {"seconds (best, range)":>22} '
        f'{"RSS before":>11} {"peak RSS MiB (best, range)":>27}')
  for store in a.stores.split(','):
    server, root, flags, env = start(store, workdir)
    try:
      for writer in ('ours', 'beam'):
        runs = []
        for i in range(a.repeat):
          path = f'{root}/big-{writer}-{i}.bin'
          proc = subprocess.run([sys.executable, '-m', 'tests.bench.bench_stores', '--store-child',
                                 writer, path, str(a.mib), *flags],
                                capture_output=True, text=True, env={**os.environ, **env})
          if proc.returncode != 0:
            sys.exit(f'{store} {writer} failed:\n{proc.stderr[-3000:]}')
          runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        secs = [r['seconds'] for r in runs]
        peaks = [r['peak_rss_mib'] for r in runs]
        print(f'{store:<6} {writer:<6} {runs[0]["mib"]:>6.0f} '
              f'{min(secs):>8.1f} ({min(secs):.1f}-{max(secs):.1f}) '
              f'{min(r["rss_before_mib"] for r in runs):>11.0f} '
              f'{min(peaks):>13.0f} ({min(peaks):.0f}-{max(peaks):.0f})', flush=True)
    finally:
      if server:
        server.stop()


def child(argv: list[str]) -> None:
  from pipelines import export_events
  start_t = time.perf_counter()
  code = export_events.run(argv)
  print(json.dumps({'code': code, 'seconds': time.perf_counter() - start_t,
                    'peak_rss_mib': harness.peak_rss_mib()}))


def main(argv: list[str]) -> None:
  if argv and argv[0] == '--child':
    return child(argv[1:])
  if argv and argv[0] == '--store-child':
    return store_child(argv[1:])
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--events', type=int, default=1_500_000)
  parser.add_argument('--format', default='jsonl')
  parser.add_argument('--stores', default=','.join(STORES))
  parser.add_argument('--workdir', default=None, help='keeps the generated lake between runs')
  parser.add_argument('--layer', default='export', choices=['export', 'store'])
  parser.add_argument('--mib', type=int, default=1024, help='--layer store: object size')
  parser.add_argument('--repeat', type=int, default=1, help='--layer store: runs per writer')
  a = parser.parse_args(argv)
  workdir = a.workdir or tempfile.mkdtemp(prefix='eventferry-bench-stores-')
  if a.layer == 'store':
    return store_layer(a, workdir)
  lake = prepare(workdir, a.events)
  print(f'{"store":<6} {"seconds":>8} {"MiB out":>8} {"peak RSS MiB":>13}')
  for store in a.stores.split(','):
    server, dest, flags, env = start(store, workdir)
    try:
      proc = subprocess.run(
          [sys.executable, '-m', 'tests.bench.bench_stores', '--child', '--lake', lake, '--date',
           str(DAY), '--dest', dest, '--format', a.format, *flags],
          capture_output=True, text=True, env={**os.environ, **env})
      if proc.returncode != 0:
        sys.exit(f'{store} failed:\n{proc.stderr[-3000:]}')
      result = json.loads(proc.stdout.strip().splitlines()[-1])
      mib = [line for line in proc.stdout.splitlines() if ' MiB ' in line]
      out = float(mib[0].split('files')[1].split('MiB')[0]) if mib else 0.0
      print(f'{store:<6} {result["seconds"]:>8.1f} {out:>8.1f} {result["peak_rss_mib"]:>13.0f}')
    finally:
      if server:
        server.stop()


if __name__ == '__main__':
  main(sys.argv[1:])
