# Build: the bundled librdkafka needs a C toolchain, make and OpenSSL headers.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gatewatch \
 && cp target/release/gatewatch /usr/local/bin/gatewatch

# Run: a small Debian with only the shared libraries gatewatch links against.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/gatewatch --create-home gatewatch
COPY --from=build /usr/local/bin/gatewatch /usr/local/bin/gatewatch
COPY gatewatch.toml /etc/gatewatch/gatewatch.toml
USER gatewatch
WORKDIR /var/lib/gatewatch
ENV GATEWATCH_CONFIG=/etc/gatewatch/gatewatch.toml
EXPOSE 8080
ENTRYPOINT ["gatewatch"]
CMD ["--help"]
