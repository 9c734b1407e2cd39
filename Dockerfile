# The Caretouch image: Airflow 3.3 with the engine, its DAGs, rules and templates baked in.
# Nothing is installed when a container starts. Build and tag it with the project's version:
#   docker build -t caretouch:$(grep -m1 '^version' pyproject.toml | cut -d'"' -f2) .
FROM apache/airflow:3.3.2-python3.11

ARG CARETOUCH_VERSION=dev
LABEL org.opencontainers.image.title="caretouch" \
      org.opencontainers.image.version="${CARETOUCH_VERSION}" \
      org.opencontainers.image.description="Customer-care automation on Apache Airflow"

WORKDIR /opt/caretouch
COPY --chown=airflow:0 pyproject.toml README.md ./
COPY --chown=airflow:0 plugins ./plugins
# Installed (not editable) with the CeleryExecutor's pinned extra; the DAG files and the rules
# stay readable where the configuration below points.
RUN pip install --no-cache-dir "/opt/caretouch[celery]"
COPY --chown=airflow:0 dags ./dags
COPY --chown=airflow:0 care_rules ./care_rules
COPY --chown=airflow:0 templates ./templates
COPY --chown=airflow:0 deploy ./deploy

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/caretouch/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/caretouch/plugins \
    CARE_RULES_DIR=/opt/caretouch/care_rules \
    CARE_TEMPLATES_DIR=/opt/caretouch/templates
WORKDIR /opt/airflow
