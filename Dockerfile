# syntax=docker/dockerfile:1
# ollama-proxy, native build, in a small non-root image.
#
#   docker build -t ollama-proxy .
#   docker run --rm -p 8080:8080 -e AIG_AUTH_TOKEN=... \
#     -e OLLAMA_ORIGIN=http://host.docker.internal:11434 \
#     --add-host=host.docker.internal:host-gateway ollama-proxy

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ollama-proxy-native \
 && install -m 0755 target/release/ollama-proxy /ollama-proxy

# glibc, CA certificates (for https origins) and a nonroot user; no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /ollama-proxy /usr/local/bin/ollama-proxy
# Inside a container the listeners must not be loopback-only. Publish only
# 8080: the admin port (metrics, readiness) has no authentication.
ENV LISTEN_ADDR=0.0.0.0:8080 \
    METRICS_ADDR=0.0.0.0:9464 \
    OLLAMA_ORIGIN=http://host.docker.internal:11434
EXPOSE 8080 9464
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/ollama-proxy"]
