"""The lake's edge services: the project's Mosquitto, the MQTT-to-Kafka bridge, the HTTP gateway."""
