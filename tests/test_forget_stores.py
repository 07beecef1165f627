"""forget with the lake and its destinations on Azure Blob (Azurite) and SFTP (the loopback
server): days written by pyarrow, imported and exported (hive Parquet; CleverTap's flat layout as
gzipped CSV) by the real commands, then one user forgotten. Every object is then read back with
the store's own means, not the project's: Azure's SDK (azure-storage-blob) and, for SFTP, the
server's folder on local disk; rows are read with pyarrow and the csv module (tests/exportkit.py),
and every byte (gzip undone) is grepped for the ids."""
import gzip
import io
import json
import os
import posixpath

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import exportkit
from tests.conftest import SCHEMA, run_cli
from tests.test_forget import ALICE, BOB, DAYS, day_rows

pytestmark = pytest.mark.engine

GONE = (ALICE,)           # forgotten; BOB stays
CT = ['--layout', 'clevertap', '--format', 'csv', '--request_id', '1700000000123',
      '--database_id', 'W8R-6K4-5W7Z']


def objects(store, prefix: str) -> dict[str, bytes]:
  """{url: bytes} of every object under `prefix` (a URL under the store's root)."""
  if store.name == 'sftp':
    root = os.path.join(store.extra['root'], prefix.split('/', 3)[3])
    return {f'{prefix}/{os.path.relpath(os.path.join(d, n), root)}':
            open(os.path.join(d, n), 'rb').read()
            for d, _, names in os.walk(root) for n in names}
  from azure.storage.blob import BlobServiceClient
  conn = store.flags[store.flags.index('--azure_connection_string') + 1]
  container = BlobServiceClient.from_connection_string(conn).get_container_client('ferry')
  head = 'azfs://devstoreaccount1/ferry/'
  return {head + b.name: container.download_blob(b.name).readall()
          for b in container.list_blobs(name_starts_with=prefix[len(head):] + '/')}


def committed(files: dict[str, bytes], folder: str) -> dict[str, bytes]:
  """The data files that the committed days under `folder` list in their manifests."""
  out = {}
  for url in files:
    name = posixpath.basename(url)
    if url.startswith(folder + '/') and name.startswith('_SUCCESS'):
      manifest = files[posixpath.join(posixpath.dirname(url),
                                      '_manifest' + name[len('_SUCCESS'):] + '.json')]
      for f in json.loads(manifest)['files']:
        path = posixpath.join(posixpath.dirname(url), f['name'])
        out[path] = files[path]
  return out


def rows_of(files: dict[str, bytes], folder: str, fmt: str) -> list[str]:
  """Rows of the committed files under `folder`: lake files (fmt None) as pyarrow reads them,
  export files by the export readers of tests/exportkit.py."""
  rows = []
  for url, data in committed(files, folder).items():
    if url.endswith('.gz'):
      data = gzip.decompress(data)
    got = pq.read_table(io.BytesIO(data)).to_pylist() if fmt is None \
        else exportkit.READERS[fmt](data)
    rows += [json.dumps(r, sort_keys=True, default=str) for r in got]
  return sorted(rows)


def holds(text: str, ids) -> bool:
  return any(i in text for i in ids)


@pytest.mark.parametrize('name', ['azure', 'sftp'])
def test_forget_one_user_on_azure_and_sftp(name, request, tmp_path):
  store = request.getfixturevalue(f'{name}_store')
  bucket, root = tmp_path / 'bucket', store.url(f'forget-{name}')
  lake, hive, flat = f'{root}/lake', f'{root}/hive', f'{root}/flat'
  days = DAYS[:2]
  for dt in days:
    os.makedirs(bucket / f'dt={dt}')
    pq.write_table(pa.Table.from_pylist(day_rows(dt), schema=SCHEMA), bucket / f'dt={dt}' / 'a.parquet')
    open(bucket / f'dt={dt}' / '_SUCCESS', 'w').close()
  span = ['--from_date', days[0], '--to_date', days[-1]]
  run_cli('pipelines.import_events', '--source', str(bucket), '--lake', lake, *span,
          '--shards', '2', *store.flags)
  run_cli('pipelines.export_events', '--lake', lake, '--dest', hive, *span, *store.flags)
  run_cli('pipelines.export_events', '--lake', lake, '--dest', flat, *span, *CT, *store.flags)
  before = objects(store, root)
  kinds = {'lake': (lake, None), 'hive': (hive, 'parquet'), 'flat': (flat, 'csv')}
  old = {k: rows_of(before, folder, fmt) for k, (folder, fmt) in kinds.items()}
  assert all(any(holds(r, GONE) for r in rows) for rows in old.values())

  proc = run_cli('pipelines.forget', '--lake', lake, '--user_id', ALICE, *store.flags)
  assert ALICE not in proc.stdout + proc.stderr

  after = objects(store, root)
  for kind, (folder, fmt) in kinds.items():
    keep = [r for r in old[kind] if not holds(r, GONE)]
    assert rows_of(after, folder, fmt) == keep, kind   # every other row as it was
    assert any(holds(r, (BOB,)) for r in keep)
  for url, data in after.items():
    texts = [data] + ([gzip.decompress(data)] if url.endswith('.gz') else [])
    if url.endswith('.parquet'):
      texts.append(str(pq.read_table(io.BytesIO(data)).to_pylist()).encode())
    for text in texts:
      assert ALICE.encode() not in text, url
  # the flat day's files were rewritten under the names it owned, nothing else in the prefix
  flat_names = {u for u in after if u.startswith(flat + '/') and '/_eventferry/' not in u}
  assert flat_names == {u for u in before if u.startswith(flat + '/') and '/_eventferry/' not in u}
  audit = [json.loads(d) for u, d in after.items() if '/_eventferry/forget/' in u
           and u.endswith('.json')]
  assert [a['outcome'] for a in audit] == ['finished']
  assert sorted(d['target'] for d in audit[0]['destinations'].values() if d['done']) == sorted(
      [f'{hive}/dt={dt}' for dt in days] + [flat] * 2)
