{#- Backup of the broker's definitions (vhosts, users with their password
    hashes, permissions, queues, exchanges, bindings, policies): when the site
    names a backup repository, the job `rabbitmq` (backup/job.jinja) exports them
    with rabbitmqctl into backup_dir and ships that folder off the guest with
    restic. Restore: `rabbitmqctl import_definitions <file>` (docs/backup.md).
    Messages themselves are not backed up: queues are for work in flight. #}
{%- from 'rabbitmq/map.jinja' import rabbitmq %}
{%- from 'backup/job.jinja' import job with context %}
{%- from 'backup/map.jinja' import enabled as backup_enabled %}
{%- set backup_dir = '/var/backups/rabbitmq' %}
{%- if backup_enabled %}
include:
  - rabbitmq.service
  - backup.client

rabbitmq-backup-dir-managed:
  file.directory:
    - name: {{ backup_dir }}
    - user: {{ rabbitmq.user }}
    - group: {{ rabbitmq.user }}
    - mode: '0700'
    - require:
      - pkg: rabbitmq-package-installed

rabbitmq-backup-export-script-managed:
  file.managed:
    - name: /usr/local/sbin/rabbitmq-export-definitions
    - user: root
    - group: root
    - mode: '0750'
    - contents: |
        #!/bin/sh
        # Managed by Salt (rabbitmq.backup): the broker's definitions into {{ backup_dir }}
        # (Debian's rabbitmqctl runs as {{ rabbitmq.user }}, which owns the folder).
        set -eu
        umask 077
        rabbitmqctl --quiet export_definitions {{ backup_dir | quote }}/.definitions.json
        mv {{ backup_dir | quote }}/.definitions.json {{ backup_dir | quote }}/definitions.json

{{ job('rabbitmq', 'rabbitmq', [backup_dir], prepare=['/usr/local/sbin/rabbitmq-export-definitions'],
       require=[{'file': 'rabbitmq-backup-export-script-managed'}, {'file': 'rabbitmq-backup-dir-managed'},
                {'unit': 'rabbitmq-service-running'}]) }}
{%- endif %}
