"""Files: atomic writes, checkpoints, histories, weights and exports."""
