{#- Background jobs: a systemd timer runs cron.php as the Nextcloud account
    every cron_minutes (Nextcloud's recommended mode; nextcloud.application
    switches the server to it). The service does nothing until Nextcloud is
    installed (its config.php exists). #}
{%- from 'nextcloud/map.jinja' import nextcloud, php_bin %}
include:
  - nextcloud.php

nextcloud-cron-service-managed:
  file.managed:
    - name: /etc/systemd/system/nextcloud-cron.service
    - contents: |
        # Managed by Salt (nextcloud.cron)
        [Unit]
        Description=Nextcloud background jobs (cron.php)
        ConditionPathExists={{ nextcloud.root }}/config/config.php
        After=network-online.target redis-server.service

        [Service]
        Type=oneshot
        User={{ nextcloud.user }}
        ExecStart={{ php_bin }} -f {{ nextcloud.root }}/cron.php
        KillMode=process

nextcloud-cron-timer-managed:
  file.managed:
    - name: /etc/systemd/system/nextcloud-cron.timer
    - contents: |
        # Managed by Salt (nextcloud.cron)
        [Unit]
        Description=Nextcloud background jobs every {{ nextcloud.cron_minutes }} minutes

        [Timer]
        OnBootSec={{ nextcloud.cron_minutes }}min
        OnUnitActiveSec={{ nextcloud.cron_minutes }}min
        Unit=nextcloud-cron.service

        [Install]
        WantedBy=timers.target

nextcloud-cron-timer-running:
  unit.running:
    - name: nextcloud-cron.timer
    - enable: true
    - watch:
      - file: nextcloud-cron-timer-managed
      - file: nextcloud-cron-service-managed
    - require:
      - unit: nextcloud-php-fpm-running
