"""Outbound webhooks: endpoints that subscribe to notification events, and the signed
deliveries of those events (Standard Webhooks), stored first and then sent with retries."""
