# One image for every Airflow role; the bake workers add the deployment toolchain (Packer,
# Terraform; the AWS provider is downloaded by `terraform init`, or mirror it into the image
# and set AIRFLOW__AMI_RELEASE__TERRAFORM_PLUGIN_DIR).
# Build:  docker build -t ami-release .            (base roles)
#         docker build -t ami-release-bake --build-arg TOOLCHAIN=packer-chef .
# Installs the runtime lock (requirements.txt) only: no moto, pytest, OpenBao CLI or linters
# (those are in requirements-dev.txt, for development and the tests).
# BASE: any Debian bookworm with Python 3.11 and pip. Without a registry (an
# air-gapped site, our tests) build one with debootstrap:  deploy/images/base.sh  prints its tag,
#         docker build --build-arg BASE="$(deploy/images/base.sh)" -t ami-release .
# Both bases: the lock goes into the base's own python3 (the official image's /usr/local, or
# Debian's, which PEP 668 marks externally managed: hence --break-system-packages: the image's
# only Debian Python packages are python3 and pip themselves), and `python` names it on both.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV AIRFLOW_HOME=/opt/airflow \
    PYTHONPATH=/opt/ami-release/plugins \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/ami-release/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/ami-release/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

RUN python3 -m pip install --no-cache-dir --break-system-packages uv \
 && { command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python; } \
 # uid 50000 owns AIRFLOW_HOME (its home directory) and the logs folder the logs volume mounts on
 && useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home --shell /bin/bash airflow \
 && mkdir -p /opt/airflow/logs \
 && chown -R 50000:0 /opt/airflow && chmod -R g+rwX /opt/airflow

WORKDIR /opt/ami-release
COPY requirements.txt .
RUN uv pip install --system --break-system-packages --no-cache --compile-bytecode -r requirements.txt

# The toolchain last: both images share every layer above (one install of the lock).
ARG TOOLCHAIN=none
# Terraform for the toolchain image (check_infrastructure / apply_infrastructure run there),
# checked against the SHA256SUMS published beside it (HashiCorp's, or your mirror's).
ARG TERRAFORM_VERSION=1.11.4
ARG TERRAFORM_RELEASES=https://releases.hashicorp.com/terraform
RUN if [ "$TOOLCHAIN" = "packer-chef" ]; then \
      apt-get update && apt-get install -y --no-install-recommends packer openssh-client ca-certificates curl unzip \
      && cd /tmp && base="${TERRAFORM_RELEASES}/${TERRAFORM_VERSION}" \
      && curl -fsSLO "$base/terraform_${TERRAFORM_VERSION}_linux_amd64.zip" \
      && curl -fsSLO "$base/terraform_${TERRAFORM_VERSION}_SHA256SUMS" \
      && sha256sum -c --ignore-missing "terraform_${TERRAFORM_VERSION}_SHA256SUMS" \
      && unzip -q "terraform_${TERRAFORM_VERSION}_linux_amd64.zip" terraform -d /usr/local/bin \
      && rm -f terraform_* && cd / \
      && rm -rf /var/lib/apt/lists/*; \
    elif [ "$TOOLCHAIN" != "none" ]; then echo "unknown TOOLCHAIN=$TOOLCHAIN (none, packer-chef)"; exit 1; \
    fi
COPY dags ./dags
COPY plugins ./plugins
COPY include ./include
USER 50000
WORKDIR /opt/airflow
