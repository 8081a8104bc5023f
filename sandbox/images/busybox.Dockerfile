# A 2 MB image holding only Debian's busybox-static, for machines without a registry.
# Built by scripts/dockerd.sh (build context: this file plus a copy of /bin/busybox) and tagged
# alpine:latest, so job specs written for the registry image run unchanged in tests.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
