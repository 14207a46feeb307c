# Slim Python + ffmpeg, running as a non-root user with the database on a volume.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 bot
WORKDIR /app

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY handlers ./handlers
RUN pip install --no-cache-dir . \
    && rm -rf /root/.cache

# Fetch the tokenizer once at build time so the bot never downloads at run time.
ENV TIKTOKEN_CACHE_DIR=/app/.tiktoken
RUN python -c "import tiktoken; tiktoken.get_encoding('o200k_base')" \
    && chmod -R a+rX /app/.tiktoken

COPY config.toml /app/config.toml
RUN mkdir /data && chown bot:bot /data
VOLUME ["/data"]

ENV BOT_DATABASE=/data/bot.sqlite3 \
    BOT_CONFIG=/app/config.toml \
    PYTHONUNBUFFERED=1
USER bot
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
