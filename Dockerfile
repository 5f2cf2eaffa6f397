# syntax=docker/dockerfile:1
#
# agentd as one static binary on distroless: no shell, no package manager, uid 65532.
#
#   docker build -t agentd --build-arg VERSION=$(git describe --always) .
#   docker run -p 8080:8080 -v agentd-data:/data -e AGENTD_BOOTSTRAP_KEY=... agentd
#
# docs/deploy.md explains the volume, the variables and the health probe.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: a change to the source reuses the downloaded modules' layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: SQLite is modernc.org/sqlite (pure Go), so the binary needs no libc
# and runs on an image without one (cmd/agentd/static_build_test.go checks it).
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /agentd ./cmd/agentd \
 && /agentd version \
 && mkdir /data

# The health probe's only tool: distroless has no shell and no HTTP client. The
# uclibc build of busybox is static; installed as "wget" it runs its wget applet.
FROM busybox:1.37.0-uclibc AS probe

FROM gcr.io/distroless/static-debian12:nonroot
# The base brings CA certificates (HTTPS to model providers), tzdata and the
# nonroot user (65532) in /etc/passwd.
COPY --from=build /agentd /agentd
COPY --from=probe /bin/busybox /usr/local/bin/wget
# /data owned by nonroot: a new named volume is seeded from the image, owner
# included, so SQLite can create its database, WAL and lock files there.
COPY --from=build --chown=65532:65532 /data /data
VOLUME /data
# Environment beats a mounted config file's addr: and db: (README, Configuration).
ENV AGENTD_ADDR=0.0.0.0:8080 \
    AGENTD_DB=sqlite:/data/agentd.db
EXPOSE 8080
# Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/agentd"]
CMD ["serve"]
