# The mart binary on a slim Debian with PostgreSQL client libraries not needed:
# mart speaks the PostgreSQL protocol itself (tokio-postgres).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mart

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/mart mart
COPY --from=build /src/target/release/mart /usr/local/bin/mart
USER mart
WORKDIR /var/lib/mart
EXPOSE 8080 4370
ENTRYPOINT ["mart"]
