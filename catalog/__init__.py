"""What can be requested: KAITO presets, GPU instance types and their prices."""
