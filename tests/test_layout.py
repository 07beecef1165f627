"""Export layouts: templates, and names that cannot escape DEST or collide."""
import pytest

from transforms.lake.layout import Layout, LayoutError, safe

HOSTILE = ['../../x', '/etc/passwd', '..', '.hidden', '_x', '$session_start', 'a/b', 'a_b',
           'a\\b', 'x' * 300, '장바구니 담기', 'nul\x00byte', ' ']


@pytest.mark.parametrize('value', HOSTILE)
def test_safe_names_stay_one_visible_segment(value):
  name = safe(value)
  assert '/' not in name and '\\' not in name and '..' not in name
  assert name and not name.startswith(('.', '_')) and len(name) <= 100


def test_safe_names_do_not_collide_and_leave_plain_names_alone():
  names = [safe(v) for v in HOSTILE]
  assert len(set(names)) == len(names)
  assert safe('purchase') == 'purchase' and safe('2023-01-01') == '2023-01-01'
  assert safe('장바구니_담기') == '장바구니_담기'


@pytest.mark.parametrize('event', HOSTILE)
def test_rendered_paths_stay_inside(event):
  layout = Layout.of('hive', 'exports/dt={dt}', '{event}/{event}-{index}.{ext}')
  path = layout.file_path({'event': event, 'index': '00000', 'ext': 'csv'})
  assert not path.startswith(('/', '..')) and '/../' not in f'/{path}/'
  assert path.count('/') == 1


@pytest.mark.parametrize('preset,partition,file,message', [
    ('nope', None, None, '--layout'),
    ('hive', '/abs/{dt}', None, 'relative path'),
    ('hive', '../{dt}', None, 'relative path'),
    ('hive', None, '{event}.csv', 'needs {index}'),
    ('hive', None, '{foo}-{index}', 'uses {foo}'),
    ('hive', 'fixed', None, 'needs {dt}'),
    ('hive', 'dt={hh}', None, 'uses {hh}'),
])
def test_bad_templates_say_what_to_fix(preset, partition, file, message):
  with pytest.raises(LayoutError, match=message.replace('{', r'\{').replace('}', r'\}')):
    Layout.of(preset, partition, file)


def test_clevertap_is_flat_with_a_manifest_and_success_per_day():
  layout = Layout.of('clevertap', None, None)
  values = {'dt': '2023-01-01', 'yyyymmdd': '20230101', 'request_id': 'R1', 'database_id': 'D-1',
            'export_time': '202301021305', 'event': '../x', 'index': '00000-000',
            'ext': 'jsonl.gz'}
  assert layout.flat and layout.per_day and layout.by_event
  assert layout.partition_path(values) == ''
  name = layout.file_path(values)
  assert name.startswith('R1-202301021305-x-') and name.endswith('-20230101-00000-000-D-1.jsonl.gz')
  assert '/' not in name
  assert layout.markers(values) == ('_manifest-20230101.json', '_SUCCESS-20230101')
  assert layout.unit(values) == '20230101'
  hive = Layout.of('hive', None, None)
  assert not hive.flat and hive.markers(values) == ('_manifest.json', '_SUCCESS')
  assert hive.unit(values) == 'dt=2023-01-01'
  adobe = Layout.of('adobe', None, None)
  assert not adobe.flat and not adobe.per_day
  assert Layout.of('hive', 'exports', '{event}-{dt}-{index}.{ext}').flat


def test_a_folder_new_in_every_run_has_the_day_as_its_commit_unit():
  """Adobe's exportTime= folder differs from run to run: the lock must be the day's, so two runs
  of a day in different minutes exclude each other, and two days never share a unit."""
  adobe = Layout.of('adobe', None, None)
  day = {'dt': '2023-01-01', 'yyyymmdd': '20230101', 'dataset': 'events', 'run_id': 'R1'}
  units = {adobe.unit({**day, 'export_time': t}) for t in ('202301021305', '202301021306')}
  assert adobe.run_scoped and len(units) == 1
  assert adobe.unit({**day, 'dt': '2023-01-02', 'yyyymmdd': '20230102',
                     'export_time': '202301021305'}) not in units
  assert not Layout.of('hive', None, None).run_scoped
  assert not Layout.of('clevertap', None, None).run_scoped
