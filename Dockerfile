# One image for every Airflow role; the bake workers add the deployment toolchain.
# Build:  docker build -t ami-release .            (base roles)
#         docker build -t ami-release-bake --build-arg TOOLCHAIN=packer-chef .
FROM python:3.11-slim-bookworm

ARG TOOLCHAIN=none
ENV AIRFLOW_HOME=/opt/airflow \
    PYTHONPATH=/opt/ami-release/plugins \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/ami-release/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/ami-release/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

RUN pip install --no-cache-dir uv \
 && if [ "$TOOLCHAIN" = "packer-chef" ]; then \
      apt-get update && apt-get install -y --no-install-recommends packer openssh-client ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --create-home --uid 50000 airflow

WORKDIR /opt/ami-release
COPY requirements.txt .
RUN uv pip install --system --no-cache --compile-bytecode -r requirements.txt
COPY dags ./dags
COPY plugins ./plugins
COPY include ./include
USER airflow
