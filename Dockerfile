# papermail: one image for every role (web, worker, beat, flower, migrate); the compose
# file picks the command.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PAPERMAIL_VAR_DIR=/app/var

WORKDIR /app
RUN groupadd --system --gid 10001 papermail \
 && useradd --system --uid 10001 --gid papermail --home-dir /app papermail

COPY pyproject.toml README.md ./
COPY src ./src
COPY workers ./workers
# The templates ship inside the package (papermail/templates); no developer tools.
COPY templates ./templates
RUN pip install ".[ops]"

RUN mkdir -p /app/var && chown papermail:papermail /app/var
USER papermail
EXPOSE 8000
CMD ["papermail", "web", "--host", "0.0.0.0", "--port", "8000"]
