# reflow-bridge on no base image at all: a static binary and the example configs.
# Built by docker/build-images.sh, which puts both in the build context; needs no registry.
FROM scratch
COPY reflow-bridge /usr/local/bin/reflow-bridge
COPY configs /etc/reflow
USER 10001
ENTRYPOINT ["/usr/local/bin/reflow-bridge"]
CMD ["--help"]
