# nats-server on no base image at all: the official static binary (the one the tests run).
# Built by docker/build-images.sh, which puts it in the build context; needs no registry.
# Arguments go to nats-server, as with the official image: `--jetstream --store_dir /data`.
FROM scratch
COPY nats-server /usr/local/bin/nats-server
EXPOSE 4222 8222
ENTRYPOINT ["/usr/local/bin/nats-server"]
CMD ["--jetstream", "--store_dir", "/data"]
