# syntax=docker/dockerfile:1
# Multi-stage build: a static chatgroupd on a distroless, non-root base. The chart's image.
ARG GO_VERSION=1.26
FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/chatgroupd ./cmd/chatgroupd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/chatgroupd /usr/local/bin/chatgroupd
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/chatgroupd"]
CMD ["run"]
