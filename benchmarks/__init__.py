import model  # noqa: F401, E402 - first: sets torch's CPU memory settings before torch loads
