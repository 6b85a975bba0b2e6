# The edge client: the runtime (OpenVINO, OpenCV, numpy) and the KServe v2 client; no torch, no converter.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edge_runtime ./edge_runtime
COPY convert/__init__.py ./convert/__init__.py
COPY calib_data ./calib_data
COPY configs ./configs
RUN pip install --no-cache-dir ".[remote]"
WORKDIR /work
ENTRYPOINT ["sdpose-edge"]
