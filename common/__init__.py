"""Code shared by every function handler: config, model, store, queue, channels, service."""
