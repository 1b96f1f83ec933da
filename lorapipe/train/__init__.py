"""The training loop and what keeps a run alive: checkpoints, resume, the S3 mirror, several processes, MLflow."""
