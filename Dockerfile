# gptbot: slim Python with ffmpeg (voice) and Noto CJK fonts (the assistant's charts),
# running as a non-root user with its database on the /data volume.
#   docker build -t gptbot .
#   docker run -d --env-file .env -v gptbot-data:/data --stop-timeout 45 gptbot
# compose.yaml does the same; see the README for bind mounts and --user.
FROM python:3.11-slim

# Debian's current security updates are wanted here, so versions are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg fonts-noto-cjk \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 bot && useradd --create-home --uid 10001 --gid 10001 bot

# Dependencies first, in their own layer: a source change does not reinstall them.
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The bot itself (tiktoken's encoding ships inside it: nothing is downloaded, ever).
COPY README.md LICENSE ./
COPY bot ./bot
COPY adapters ./adapters
COPY handlers ./handlers
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf /src/build

# /data is writable by the bot user in a named volume. A bind mount keeps the host
# directory's owner: run with --user "$(id -u):$(id -g)" or chown it to 10001.
RUN mkdir /data && chown 10001:10001 /data
VOLUME ["/data"]

# A config.toml mounted at /app/config.toml is read; without one the defaults apply.
WORKDIR /app
ENV BOT_DATABASE=/data/bot.sqlite3 \
    BOT_HEALTH_FILE=/tmp/gptbot.health \
    PYTHONUNBUFFERED=1
USER 10001:10001

# Healthy while the bot runs and every platform is connected (the bot rewrites the
# health file every 10 s; a light check that imports no network library).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "bot", "doctor", "--live"]

# On SIGTERM the bot stops taking messages and finishes the answers in flight (up to
# 30 s): give it a stop timeout of 45 s (compose.yaml: stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
