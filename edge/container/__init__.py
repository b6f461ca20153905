"""humwatch in a container: the image's health check and the Home Assistant add-on's start-up.

The image's recipe (Dockerfile), the local base image script and the Compose file live beside them.
"""
