"""Tiled inference with overlap blending, block by block, and the outputs it writes."""
