"""Service tests: a real uvicorn server on 127.0.0.1 with a tiny bank."""
