"""Exposition: Prometheus collectors built at scrape time and the worker's web endpoints."""
