# spark-gateway image: build on Debian 12 with the repo's own package list, run on
# debian:bookworm-slim with only the shared libraries the binary loads, as a non-root user.
#   docker build -t REGISTRY/spark-gateway:TAG .      (or: buildah bud, podman build)

FROM debian:bookworm AS build
WORKDIR /src
# The one package list (scripts/packages.txt, "# build" section), read by the same script CI uses.
COPY scripts/setup scripts/packages.txt scripts/
RUN scripts/setup --build-only && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
 && cmake --build /build -j"$(nproc)" --target spark-gateway \
 && strip /build/gateway/spark-gateway \
 && scripts/runtime-packages /build/gateway/spark-gateway > /build/runtime-packages.txt

FROM debian:bookworm-slim
COPY --from=build /build/runtime-packages.txt /tmp/
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && groupadd --gid 65532 spark-gateway \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin spark-gateway
COPY --from=build /build/gateway/spark-gateway /usr/local/bin/spark-gateway
USER 65532:65532
# Spark ports (kubernetes.port_range) and the admin port; the config says which.
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/spark-gateway"]
CMD ["serve", "--config", "/etc/spark-gateway/gateway.json"]
