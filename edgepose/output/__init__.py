"""Output: where poses go (stdout, MQTT) and how they are shown (preview page, drawing)."""
