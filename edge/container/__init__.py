"""humwatch in a container: the image's health check, and the Home Assistant add-on as a local folder.

The image's recipe (Dockerfile), its run-time system packages (system-packages.sh, which the
add-on's image runs too), the local base image script and the Compose file live beside it. The Home
Assistant add-on (its config.yaml, build.yaml, Dockerfile and start) is ha-addon/ at the repository's
root; `humwatch addon-folder DIR` (addon_folder.py) writes it as a local add-on folder.
"""
