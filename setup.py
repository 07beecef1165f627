"""eventferry: Apache Beam pipelines that move product-analytics events in and out of an event lake.

Packages `pipelines`, `transforms` and `schemas` for Beam workers (`--setup_file ./setup.py`).
Beam is pinned to one version here, in the Dockerfile and in the docs.
"""
import setuptools

BEAM_VERSION = '2.77.0'

setuptools.setup(
    name='eventferry',
    version='0.7.0',   # CHANGELOG.md: bumped when behaviour changes
    description='Import, ingest and export product-analytics events with Apache Beam',
    packages=setuptools.find_packages(include=['pipelines', 'transforms', 'transforms.*', 'schemas']),
    # The raw-event parser of streaming ingest (transforms/kernels/rawjson.py) and the JSON text of
    # exports (transforms/kernels/jsonify.py). Optional: without a C compiler the install still
    # succeeds; ingest then parses with msgspec alone, 3x slower, and exports write map columns'
    # JSON with Arrow kernels, the same bytes about ten times slower.
    ext_modules=[setuptools.Extension(f'transforms.kernels.{name}', [f'transforms/kernels/{name}.c'],
                                      extra_compile_args=['-O2'], optional=True)
                 for name in ('_rawjson', '_jsonify')],
    python_requires='>=3.10',
    install_requires=[
        f'apache-beam[gcp,aws,azure]=={BEAM_VERSION}',
        'asyncssh==2.24.1',   # the sftp:// filesystem (transforms/stores/sftp.py)
        'pyarrow==25.0.1',
        'pydantic==2.14.3',
        'msgspec==0.22.0',   # raw JSON events: 5x faster than json.loads (transforms/kernels/raw.py)
        'fastavro==1.13.1',   # the Avro export (transforms/export.py)
        'cramjam==2.14.0',    # fastavro's snappy codec (--format avro --compression snappy)
        # --lake_format iceberg (transforms/lake/iceberg.py, imported only by Iceberg runs)
        'pyiceberg[pyarrow,sql-sqlite,sql-postgres]==0.12.0',
    ],
    extras_require={
        'test': ['pytest==9.0.3', 'duckdb==2.0.0', 'hypothesis==6.170.15',
                 'pytest-xdist==3.8.0',   # ./run.sh test runs the whole suite on two workers
                 'ruff==0.17.5', 'mypy==2.4.1',   # ./run.sh test lints and type-checks first (pyproject.toml)
                 # the writer matrix (tests/test_import_writers.py); pyspark needs Java 17
                 'polars==2.1.0', 'pandas==3.1.1', 'pyspark==4.3.0',
                 # loopback stores for tests/test_clouds.py (Azurite comes from npm: run.sh)
                 'moto[server]==5.2.5', 'gcp-storage-emulator==2026.7.19', 'asyncssh==2.24.1'],
    },
)
