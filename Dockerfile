# A loopline worker image: `docker compose up` builds it (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The package first, examples apart: editing a task file does not reinstall the dependencies.
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY processors/ processors/
COPY streams/ streams/
RUN pip install .
COPY examples/ examples/

RUN useradd --create-home --uid 1000 loopline \
    && mkdir -p /var/lib/loopline \
    && chown loopline /var/lib/loopline
USER loopline
ENV LOOPLINE_STATE_DIR=/var/lib/loopline

CMD ["loopline", "--help"]
