# The gembatch image: the CLI, the batch runner and the GPU model pods in one binary, built
# with the `cuda` feature on NVIDIA's CUDA base (compute capability 8.9 for the L4).
#   docker build -t gembatch:cuda .
FROM nvidia/cuda:12.4.1-devel-ubuntu22.04 AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH CUDA_COMPUTE_CAP=89
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
RUN cargo build --release --features cuda --bin gembatch

FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates python3-pip \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gembatch /usr/local/bin/gembatch
COPY jobs /jobs
USER 65532
ENTRYPOINT ["gembatch"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
