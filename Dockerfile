# Lector: one image for `lector serve`, `lector work` and `lector migrate` (see docs/deploy.md).
#
#   docker build -t lector .
#   docker run --rm lector --help
#
# Build stage: the official Swift toolchain on Debian 12 plus the -dev packages of the C libraries the
# CTesseract and COpenCV targets link against. The Swift runtime and Foundation are linked statically, so the
# runtime stage needs only Debian's shared libraries.
ARG SWIFT_VERSION=6.3
FROM swift:${SWIFT_VERSION}-bookworm AS build

# Versions are not pinned: they follow Debian 12's point releases, the same as `deploy/scripts/deps.sh`.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libtesseract-dev libleptonica-dev \
      libopencv-dnn-dev libopencv-imgproc-dev libopencv-core-dev \
      pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Dependencies first, so that a change under Sources/ does not fetch them again.
COPY Package.swift Package.resolve[d] ./
RUN swift package resolve
COPY Sources ./Sources
# Not built, but SwiftPM refuses a manifest whose test target has no folder.
COPY Tests/LectorTests ./Tests/LectorTests
RUN swift build -c release --product lector --static-swift-stdlib \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/lector" /out/lector

# Runtime stage: Debian 12 with the shared libraries the binary links (Tesseract 5, Leptonica, the three
# OpenCV 4.6 modules), Tesseract's English and orientation models, poppler's pdfinfo/pdftoppm for PDF input,
# and tini as PID 1 (forwards SIGTERM to lector, reaps the poppler child processes).
FROM debian:bookworm-slim AS runtime

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libtesseract5 liblept5 tesseract-ocr-eng tesseract-ocr-osd \
      libopencv-dnn406 libopencv-imgproc406 libopencv-core406 \
      poppler-utils ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid/gid: Kubernetes' runAsUser/fsGroup and volume ownership refer to it.
# /var/lib/lector/storage (LECTOR_STORAGE_ROOT below) is where the job folders live: a volume shared by every
# API and worker process until object storage replaces it. It exists in the image, owned by lector, so that a
# new Docker named volume mounted there starts with that owner (Docker copies the directory's ownership and
# contents into an empty volume). With a read-only root file system, mount a volume there: lector writes there.
RUN groupadd --system --gid 10001 lector \
 && useradd --system --uid 10001 --gid lector --home-dir /app --no-create-home --shell /usr/sbin/nologin lector \
 && install -d -o lector -g lector /app /var/lib/lector/storage

# The working directory holds what lector finds relative to it: db/ (`lector migrate --directory db`) and
# deploy/models/ (the shipped DB text detector, the PP-OCR recogniser and angle classifier; EAST, if wanted, is mounted at deploy/models/east/).
WORKDIR /app
COPY db ./db
COPY deploy/models/ppocr-v4-det ./deploy/models/ppocr-v4-det
COPY deploy/models/ppocr-v6-rec ./deploy/models/ppocr-v6-rec
COPY deploy/models/ppocr-cls ./deploy/models/ppocr-cls
COPY --from=build /out/lector /usr/local/bin/lector

# OMP_THREAD_LIMIT=1: Debian's Tesseract is 2-10x slower without it; MALLOC_ARENA_MAX=2: a worker's memory
# creeps up without it (BENCHMARKS.md, P7). lector re-execs itself to set both when missing; set here, it
# does not need to. LECTOR_HTTP_HOST: listen on every interface, as a container must.
ENV OMP_THREAD_LIMIT=1 \
    MALLOC_ARENA_MAX=2 \
    LECTOR_HTTP_HOST=0.0.0.0 \
    LECTOR_HTTP_PORT=8080 \
    LECTOR_METRICS_PORT=9090 \
    LECTOR_STORAGE_ROOT=/var/lib/lector/storage \
    LECTOR_DB_MODEL=/app/deploy/models/ppocr-v4-det/ch_PP-OCRv4_det_infer.opencv46.onnx \
    LECTOR_LOG_FORMAT=json \
    TMPDIR=/tmp

USER 10001:10001
EXPOSE 8080 9090
# No HEALTHCHECK: the same image runs serve (HTTP on 8080), work (metrics on 9090) and the one-shot migrate;
# compose and Kubernetes define the check that fits each role.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/lector"]
CMD ["serve"]
