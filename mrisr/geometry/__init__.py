"""The geometry contract: output grids (``grid``) and B-spline resampling onto them (``resample``)."""
