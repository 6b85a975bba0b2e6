# The edge client: the runtime (OpenVINO, OpenCV, numpy) and the KServe v2 client; no torch, no converter.
# Copies exactly what pyproject.toml's packages need (convert is declared there but only its __init__ is shipped
# here: sdpose-convert does not run in this image). `python scripts/check_deploy.py` builds a wheel from exactly
# these COPY lines, so a package missing here fails the check, not the image build.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edge_runtime ./edge_runtime
COPY edge_bench ./edge_bench
COPY convert/__init__.py ./convert/__init__.py
COPY calib_data ./calib_data
COPY configs ./configs
RUN pip install --no-cache-dir ".[remote]"
WORKDIR /work
ENTRYPOINT ["sdpose-edge"]
