# syntax=docker/dockerfile:1
# Multi-stage build: a static chatgroupd on a distroless, non-root base. The chart's image.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t <registry>/chatgroupd:<tag> .
#
# Base images are pinned by digest (the tag beside it says what it is; the digest decides which
# image it is), so a rebuild of the same commit uses the same bases. The defaults below are the
# digests public Dockerfiles pin for these exact tags (golang:1.26.8-bookworm matches go.mod's
# toolchain); they were not re-resolved against the registries from the machine that wrote this
# file. Check or bump them deliberately:
#   docker buildx imagetools inspect golang:1.26.8-bookworm
#   docker buildx imagetools inspect gcr.io/distroless/static-debian12:nonroot
# and override per build with --build-arg GO_IMAGE=... / BASE_IMAGE=... if needed.
ARG GO_IMAGE=golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
# .dockerignore keeps secrets (the IM key file README suggests, *.key, .env) and local state out
# of this copy.
COPY . .
# The version `chatgroupd version` and chatgroupd_build_info report.
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/chatgroupd ./cmd/chatgroupd

FROM ${BASE_IMAGE}
COPY --from=build /out/chatgroupd /usr/local/bin/chatgroupd
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/chatgroupd"]
CMD ["run"]
