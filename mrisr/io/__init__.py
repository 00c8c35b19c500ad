"""Reading images into a :class:`~mrisr.volume.Volume` and writing them: every format boundary of mrisr."""
