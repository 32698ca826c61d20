"""Training: joint multi-style training, learning one new style into a bank,
datasets and evaluation. Imports `model`, never `app`."""
