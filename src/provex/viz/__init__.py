"""Figures: heat maps over images, curves, grids (matplotlib, written atomically to PNG)."""
