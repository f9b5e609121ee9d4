"""Exports for the field's tools: a MONAI bundle and an nnU-Net raw dataset."""
