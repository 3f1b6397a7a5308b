# tally: one static binary, `tally enforcer` / `tally projector` / `tally serve`.
# Build: docker build -t tally .   (docker-compose.yml builds it for you)

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that editing code does not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/tally ./cmd/tally

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tally /tally
USER nonroot:nonroot
# Prometheus metrics (--http-listen).
EXPOSE 9464
ENTRYPOINT ["/tally"]
