"""The suppression list: addresses and numbers that failed permanently for a recipient reason."""
