"""Model building (TensorFlow, behind the `convert` extra): quantization and fine-tuning. Never imported by the daemon."""
