# Multi-stage build of the reflow-bridge binary.
#   docker build -t reflow-bridge .
#   docker run --rm reflow-bridge --help
#   No registry to pull rust and debian from? docker/build-images.sh builds FROM scratch.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --features cli --bin reflow-bridge \
    && cp target/release/reflow-bridge /usr/local/bin/reflow-bridge

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 reflow
COPY --from=builder /usr/local/bin/reflow-bridge /usr/local/bin/reflow-bridge
COPY examples/configs /etc/reflow
USER reflow
ENTRYPOINT ["reflow-bridge"]
CMD ["--help"]
