# The safety monitor's image: the consumer, the projector and the board all run from it
# (docker-compose.yml). Runtime dependencies only; tests run from a checkout (README).
FROM python:3.11-slim
# Pango for WeasyPrint (the DSMB report as PDF) and a font to set it in
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY safety ./safety
COPY events ./events
COPY projections ./projections
COPY dashboard ./dashboard
RUN pip install --no-cache-dir . && useradd --system --home /data safety && mkdir -p /data && chown safety /data
USER safety
WORKDIR /data
