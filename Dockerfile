# postcall: one image for the API, the workers and the Whisper service.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    POSTCALL_DATA_DIR=/data \
    POSTCALL_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
RUN pip install --no-compile -c constraints.txt '.[redis,s3]' && useradd --create-home postcall \
    && mkdir -p /data && chown postcall /data
USER postcall
VOLUME ["/data"]
EXPOSE 8000 9000
HEALTHCHECK --interval=30s --timeout=5s \
    CMD python -c "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('POSTCALL_PORT', '8000') + '/healthz')" || exit 1
ENTRYPOINT ["postcall"]
CMD ["serve"]
