"""Training: engines (DeepSpeed / plain PyTorch), schedule, checkpoints, the trainer loop."""
