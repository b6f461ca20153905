"""humwatch in a container: the image's health check.

The image's recipe (Dockerfile), the local base image script and the Compose file live beside it;
the Home Assistant add-on (its config.yaml, its Dockerfile over this image, its start) is ha-addon/
at the repository's root.
"""
