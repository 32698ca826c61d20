"""Training: joint multi-style training, learning one new style into a bank,
datasets and evaluation. Imports `model`, never `app`."""

import model  # noqa: F401, E402 - first: sets torch's CPU memory settings before torch loads
