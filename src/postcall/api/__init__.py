"""The HTTP API (FastAPI): the native contract, and later the Recall-compatible one."""
