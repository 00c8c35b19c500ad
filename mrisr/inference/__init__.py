"""The networks at inference: models and cards, devices, tiled runs, upsampling, ensembles, adaptation."""
