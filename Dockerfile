# streamtune service image (used by docker-compose.yml). CPU or GPU: torch from PyPI carries CUDA.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
RUN pip install --no-cache-dir --no-deps . && useradd --create-home streamtune
USER streamtune
ENV STREAMTUNE_BOOTSTRAP_SERVERS=kafka-1:9092
ENTRYPOINT []
CMD ["streamtune", "--help"]
