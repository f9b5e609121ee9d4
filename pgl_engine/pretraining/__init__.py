"""Self-supervised pretraining (PGL, BYOL): views, methods, losses, the trainer, advice and its check."""
