"""sender package."""
