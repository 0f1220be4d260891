# Builds the rackplane binaries into one small image; docker-compose.yml
# runs Nexus and the sled agents from it.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/ ./cmd/nexus ./cmd/sled-agent ./cmd/rackctl

FROM debian:bookworm-slim
RUN useradd --system --create-home --home-dir /var/lib/rackplane rackplane
COPY --from=build /out/ /usr/local/bin/
USER rackplane
WORKDIR /var/lib/rackplane
