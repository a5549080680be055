# syntax=docker/dockerfile:1
# The atlas binary in a small image that runs as a non-root user:
#   docker build -t atlas . && docker run -p 8080:8080 atlas serve --listen 0.0.0.0:8080
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p atlas-cli \
 && install -D target/release/atlas /out/atlas \
 && install -d -m 0700 /out/data

# glibc and CA certificates, no shell, uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/atlas /usr/local/bin/atlas
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV ATLAS_DATA_DIR=/data ATLAS_LISTEN=0.0.0.0:8080
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/atlas"]
CMD ["serve"]
