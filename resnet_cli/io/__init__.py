"""Files: checkpoints, training histories, weights of every kind, and the safetensors export format."""
