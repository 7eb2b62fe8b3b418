# syntax=docker/dockerfile:1
#
# The outboxrelay image: a static binary on distroless/static (CA
# certificates and tzdata, no shell), running as the non-root user 65532.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#                --build-arg REVISION=$(git rev-parse HEAD) -t outboxrelay .
#   docker run -v $PWD/outboxrelay.yaml:/etc/outboxrelay/config.yaml:ro -p 8080:8080 outboxrelay
#
# In a container, set http.listen to 0.0.0.0:8080 so /readyz and /metrics
# are reachable from outside it. The config file must be readable by uid
# 65532 (chmod 644, or mount a secret with mode 0444).

# go.mod needs Go >= 1.26.8; if an older golang:1.26 image is cached
# locally, build with --pull.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# e2e/container_test.go parses this line and builds the binary it tests with
# exactly these flags; `make build` uses the same.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/outboxrelay .

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
# licenses: the SPDX identifier of the repository's LICENSE.
LABEL org.opencontainers.image.title="outboxrelay" \
      org.opencontainers.image.description="Transactional outbox relay: Postgres logical replication to NATS JetStream, exactly once, in commit order" \
      org.opencontainers.image.source="https://github.com/outboxrelay/outboxrelay" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/outboxrelay /outboxrelay
# distroless's "nonroot", numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
# /readyz through the binary itself: the image has no curl or wget. Exit 0
# means ready, 1 not ready (Docker reserves 2). It reads http.listen from
# /etc/outboxrelay/config.yaml; if you mount the config elsewhere, override
# this with ["/outboxrelay", "healthcheck", "-config", "<path>"].
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/outboxrelay", "healthcheck"]
ENTRYPOINT ["/outboxrelay"]
CMD ["run", "-config", "/etc/outboxrelay/config.yaml"]
