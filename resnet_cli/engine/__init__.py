"""Training, evaluation and prediction loops; devices, precision and distributed set-up."""
