"""The control plane: its rooms (see README, "How it works") and `platform.py`, the composition root."""
