"""kafka/handlers."""
