# The mart binary on a slim Debian with PostgreSQL client libraries not needed:
# mart speaks the PostgreSQL protocol itself (tokio-postgres).
#
# Dependencies are built in a layer of their own (cargo-chef), so a change to
# mart's code rebuilds only mart: the recipe changes only with Cargo.toml and
# Cargo.lock.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.71
WORKDIR /src

FROM chef AS plan
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=plan /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin mart
COPY . .
RUN cargo build --release --locked --bin mart

# libssl3 (through ca-certificates' openssl) serves librdkafka's TLS and SASL.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/mart mart
COPY --from=build /src/target/release/mart /usr/local/bin/mart
USER mart
WORKDIR /var/lib/mart
EXPOSE 8080 4370
ENTRYPOINT ["mart"]
