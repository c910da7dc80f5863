# pgobs as compose.yaml runs it (`docker compose build`); the image's command is `pgobs ...`.
FROM python:3.11.10-slim-bookworm
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pgobs ./pgobs
COPY sql ./sql
RUN pip install --no-cache-dir '.[redis,elasticsearch,email]' \
    && useradd --system --no-create-home pgobs
USER pgobs
WORKDIR /home/pgobs
ENTRYPOINT ["pgobs"]
CMD ["--help"]
