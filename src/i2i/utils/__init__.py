"""Small utilities: image conversion and saving, run logging."""
