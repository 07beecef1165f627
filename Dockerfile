# One image for eventferry's Flex Templates: the template launcher and the Dataflow workers
# (launch with sdk_container_image set to this same image). Beam here = setup.py = docs (a test
# checks). Build: ./run.sh dataflow build PIPELINE --image REGION-docker.pkg.dev/P/REPO/eventferry:TAG
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base AS launcher

FROM apache/beam_python3.11_sdk:2.77.0
COPY --from=launcher /opt/google/dataflow/python_template_launcher \
     /opt/google/dataflow/python_template_launcher

WORKDIR /template
COPY setup.py README.md ./
COPY pipelines pipelines
COPY transforms transforms
COPY schemas schemas
COPY templates templates
COPY exports exports
# Installed once here, so workers start without installing anything; pip check fails the build
# if our pins (pyarrow, pydantic) do not fit the image's Beam.
RUN pip install --no-cache-dir . && pip check

# pipelines/__init__.py's ALLOCATOR_ENV, which local runs set (why: its docstring); the harness
# loads pyarrow before our code runs, so workers need them here (tests/test_dataflow.py compares).
ENV ARROW_DEFAULT_MEMORY_POOL=jemalloc \
    JE_ARROW_MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1,lg_extent_max_active_fit:30
# The launcher runs templates/launcher.py, which runs the pipeline each template names in
# EVENTFERRY_PIPELINE (set with gcloud's --env at template build time). The image already holds
# the dependencies, so the launcher installs nothing (PIP_NO_DEPS) and passes no setup file.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/templates/launcher.py \
    EVENTFERRY_PIPELINE=import \
    PIP_NO_DEPS=True

# Workers boot the Beam SDK harness; the Flex Template service starts the launcher itself.
ENTRYPOINT ["/opt/apache/beam/boot"]
