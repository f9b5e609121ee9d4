"""Fine-tuning a segmentation model: data, the pretrained start, patches, the budget's configuration."""
