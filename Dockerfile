# The Shunter image: scheduler, workers, CLI. Used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shunter shunter
COPY schemas schemas
COPY streams streams
COPY agents agents
COPY policies policies
COPY connectors connectors
RUN pip install --no-cache-dir .
ENTRYPOINT ["shunter"]
