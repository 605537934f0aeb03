"""Worker processes of the peers the harness measures: `python -m bench.runners.NAME DSN RECORD_DIR`."""
