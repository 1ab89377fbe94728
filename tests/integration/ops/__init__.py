"""Ops checks: Prometheus rules and scraping, the Grafana dashboard, the docker-compose cluster."""
