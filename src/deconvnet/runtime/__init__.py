"""What training and inference share: trainer arguments, W&B setup, checkpoint reading,
atomic writes, the run folder."""
