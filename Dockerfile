# syntax=docker/dockerfile:1
# The allocation service as one static binary on a distroless base.
#   docker build -t allocation --build-arg VERSION=$(git describe --always --dirty) .
#   docker compose up --build      (with PostgreSQL, Redis and a mail catcher)

FROM golang:1.26.8 AS build
WORKDIR /src
# Modules first, so that a code change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static (no cgo) so that it runs on an image without a C library; -trimpath
# keeps this machine's paths out of the binary. .git is not in the context, so
# the version comes from VERSION rather than from VCS stamping.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/allocation ./cmd/allocation

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/allocation /allocation
# nonroot (65532): the service needs no privilege, only port 8080 (> 1024).
USER nonroot:nonroot
EXPOSE 8080
ENV HTTP_ADDR=:8080
# Without DATABASE_URL the data is kept in a SQLite file here (the nonroot
# user's home, writable); mount a volume on it to keep it. Without REDIS_URL
# the embedded Redis listens inside the container only; set
# EMBEDDED_REDIS_ADDR=0.0.0.0:6380 and publish the port to reach it.
ENV DATA_DIR=/home/nonroot/data
# No shell or curl on distroless: the binary asks its own /readyz (on
# HTTP_ADDR) and exits 0 or 1. Kubernetes ignores this and uses its probes.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/allocation", "healthcheck"]
ENTRYPOINT ["/allocation"]
CMD ["serve"]
