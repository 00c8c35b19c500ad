"""Training pipeline of mrisr: data, degradations, contrasts, losses, loop."""
