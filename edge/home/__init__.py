"""Home integrations of the live monitor: MQTT / Home Assistant, HTTP, clips."""
