{#- Logical backups: a timer runs pg-backup as postgres, which writes the
    globals (roles, pg_dumpall --globals-only) and one pg_dump -Fc per database
    into a new folder of backup.dir, and removes folders older than
    backup.keep_days (never the newest). When the site names a backup repository,
    the job `postgresql` (backup/job.jinja) makes a fresh dump and ships
    backup.dir off the guest with restic (docs/backup.md). pg-restore-db restores
    one database (docs/postgresql.md). #}
{%- from 'postgresql/map.jinja' import postgresql, service, version, cluster, port %}
{%- set backup = postgresql.backup %}
{%- from 'backup/job.jinja' import job with context %}
{%- from 'backup/map.jinja' import enabled as backup_enabled %}
include:
  - postgresql.service
{%- if backup_enabled %}
  - backup.client
{%- endif %}

postgresql-backup-dir-managed:
  file.directory:
    - name: {{ backup.dir }}
    - user: postgres
    - group: postgres
    - mode: '0700'
    - makedirs: true
    - require:
      - pkg: postgresql-package-installed

postgresql-backup-scripts-managed:
  file.managed:
    - names:
      - /usr/local/sbin/pg-backup:
        - source: salt://postgresql/files/pg-backup.sh.j2
      - /usr/local/sbin/pg-restore-db:
        - source: salt://postgresql/files/pg-restore-db.sh.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0755'
    - context:
        dir: {{ backup.dir }}
        keep_days: {{ backup.keep_days }}
        version: '{{ version }}'
        cluster: {{ cluster }}
        port: '{{ port }}'

postgresql-backup-service-managed:
  file.managed:
    - name: /etc/systemd/system/postgresql-backup.service
    - source: salt://postgresql/files/backup.service.j2
    - template: jinja
    - context:
        service: {{ service }}
        dir: {{ backup.dir }}
    - require:
      - file: postgresql-backup-scripts-managed
      - file: postgresql-backup-dir-managed

postgresql-backup-timer-managed:
  file.managed:
    - name: /etc/systemd/system/postgresql-backup.timer
    - source: salt://postgresql/files/backup.timer.j2
    - template: jinja
    - context:
        on_calendar: '{{ backup.on_calendar }}'

postgresql-backup-timer-running:
  unit.running:
    - name: postgresql-backup.timer
    - enable: true
    - watch:
      - file: postgresql-backup-timer-managed
      - file: postgresql-backup-service-managed
    - require:
      - unit: postgresql-service-running

{{ job('postgresql', 'postgresql', [backup.dir], prepare=['systemctl', 'start', 'postgresql-backup.service'],
       require=[{'unit': 'postgresql-backup-timer-running'}]) }}
