# syntax=docker/dockerfile:1
# Build: docker build -t mcpgate .
# Run:   docker run -p 8642:8642 -v mcpgate-data:/data -v $PWD/mcpgate.yaml:/etc/mcpgate.yaml:ro mcpgate
# Replicas on one PostgreSQL: the same config file and key on each, e.g.
#        docker run -e MCPGATE_DATABASE_URL=postgres://… -e MCPGATE_SECRET_KEY=<64 hex> … mcpgate

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mcpgate \
 && strip target/release/mcpgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home mcpgate
COPY --from=build /src/target/release/mcpgate /usr/local/bin/mcpgate
USER mcpgate
WORKDIR /data
ENV MCPGATE_LISTEN=0.0.0.0:8642 \
    MCPGATE_DATA_DIR=/data
EXPOSE 8642
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcpgate"]
CMD ["serve"]
