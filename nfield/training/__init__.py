"""Training: the trainer loop every task runs under, the stacked (many-signal) trainer on the same
loop, and atomic checkpoints."""
