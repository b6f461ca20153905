#!/bin/sh
# Run in the last stage of the image's and the add-on's Dockerfile, on a Debian base: the run-time
# packages the base lacks (PortAudio, the PulseAudio client library, CA certificates for rtsps://
# and https://) and ALSA's PulseAudio plugin without the rest of its package (libasound2-plugins'
# other converters need libavcodec, ~150 MB): with it ALSA's default device can be PulseAudio
# (PULSE_SERVER; Home Assistant's audio). Nothing of apt's lists or the package stays behind.
set -eu
missing=""
for package in libportaudio2 libpulse0 ca-certificates; do
  dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
apt-get update -qq
[ -z "$missing" ] || apt-get install -y -qq --no-install-recommends $missing
cd /tmp && apt-get download -qq libasound2-plugins && dpkg-deb -x libasound2-plugins_*.deb /tmp/plugins
cd /tmp/plugins && find usr/lib -name 'libasound_module_*_pulse.so' -exec cp --parents {} / \;
mkdir -p /usr/share/alsa/alsa.conf.d /etc/alsa/conf.d
cp usr/share/alsa/alsa.conf.d/50-pulseaudio.conf /usr/share/alsa/alsa.conf.d/
ln -sf /usr/share/alsa/alsa.conf.d/50-pulseaudio.conf /etc/alsa/conf.d/50-pulseaudio.conf
cd / && rm -rf /tmp/plugins /tmp/libasound2-plugins_*.deb /var/lib/apt/lists/* /var/cache/apt/*.bin
