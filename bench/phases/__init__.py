"""The measurements: each takes one system through one fresh database."""
