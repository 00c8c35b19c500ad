"""Network architectures of mrisr, one module per family."""
