"""Small files shipped with mrisr (the sample volume)."""
