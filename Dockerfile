# Jimini container image.
#   docker build -t jimini:0.1.0 .          (or `make image`)
# Runtime: gcr.io/distroless/cc-debian12 — glibc, libgcc, libssl3 (pingora links OpenSSL
# dynamically) and CA certificates; no shell, no package manager. Expected size ~45 MB (±10)
# uncompressed: ~24 MB base + the stripped release binary; see docs/deploy.md.

############################ build ############################
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependencies first, in their own layer: rebuilt only when Cargo.toml/Cargo.lock/benches change.
# (benches/ is copied because Cargo.toml declares bench targets by path.) Should the stub crate
# not build (a new explicitly declared target), the full build below still builds everything.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && (cargo build --release --locked || echo "dependency pre-build skipped") \
 && rm -rf src

COPY . .
# COPY keeps the context's mtimes, which may be older than the stub build: force a rebuild.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin jimini \
 && strip target/release/jimini \
 && install -D -m 0755 target/release/jimini /out/usr/local/bin/jimini \
 && install -D -m 0644 conf/jimini.yaml /out/etc/jimini/jimini.yaml \
 && mkdir -p /out/etc/jimini/rules /out/var/lib/jimini/audit \
 && cp rules/*.yaml /out/etc/jimini/rules/ \
 && /out/usr/local/bin/jimini --version

########################### runtime ###########################
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/usr/local/bin/jimini /usr/local/bin/jimini
# Defaults baked in; a ConfigMap or bind mount over /etc/jimini/jimini.yaml or /etc/jimini/rules
# replaces them.
COPY --from=build /out/etc/jimini /etc/jimini
COPY --from=build --chown=10001:10001 /out/var/lib/jimini /var/lib/jimini

ENV JIMINI_LISTEN=0.0.0.0:8080 \
    JIMINI_ADMIN_LISTEN=0.0.0.0:9901 \
    JIMINI_RULES_DIR=/etc/jimini/rules \
    JIMINI_AUDIT_DIR=/var/lib/jimini/audit \
    RUST_LOG=info

USER 10001:10001
VOLUME ["/var/lib/jimini/audit"]
# 8080: OpenAI-compatible proxy. 9901: /healthz /readyz /metrics and the JWT-protected /admin/*.
EXPOSE 8080 9901
# No curl in distroless: the binary probes itself (exit 0 healthy, 1 not).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/jimini", "healthcheck", "--url", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["/usr/local/bin/jimini"]
CMD ["serve", "-c", "/etc/jimini/jimini.yaml"]
