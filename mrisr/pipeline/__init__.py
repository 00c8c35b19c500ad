"""The upscaling pipeline: ``upscale`` on one image, batches of files, Dask and the BIDS app."""
