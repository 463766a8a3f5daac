{#- The nextcloud role: PHP-FPM 8.2 with a pool sized from the guest's memory,
    nginx inside the guest on plain HTTP with Nextcloud's rules, Redis on a
    local socket, the data directory apart from the web root, a timer for
    cron.php; then the server itself (a pinned release proven before it is
    unpacked, installed and configured through occ, its apps, upgrades) and
    Nextcloud Office with Collabora Online; the data directory's backup off the
    guest (nextcloud.backup). `application: {converge: false}`
    stops before the download (the lab: no release is reachable there). #}
{%- from 'nextcloud/map.jinja' import application, collabora %}
include:
  - nextcloud.package
  - nextcloud.data
  - nextcloud.redis
  - nextcloud.php
  - nextcloud.web
  - nextcloud.cron
  - nextcloud.secrets
  - nextcloud.backup
{%- if application %}
  - nextcloud.application
{%- endif %}
{%- if collabora %}
  - nextcloud.collabora
{%- endif %}
