{#- The Nextcloud guest's part of the site's backup plan (docs/backup.md): when
    the site names a backup repository, the job `nextcloud` (backup/job.jinja)
    ships the data directory and a copy of config.php off the guest with restic.
    The database is the postgresql guest's job; Proxmox's vzdump takes the data
    volume too (its mount point has backup=1 unless the site says otherwise). #}
{%- from 'nextcloud/map.jinja' import nextcloud %}
{%- from 'backup/job.jinja' import job with context %}
{%- from 'backup/map.jinja' import enabled as backup_enabled %}
{%- set prepare_script = '/usr/local/sbin/nextcloud-backup-prepare' %}
include:
  - nextcloud.data
{%- if backup_enabled %}
  - backup.client
{%- endif %}

nextcloud-backup-dir-managed:
  file.directory:
    - name: {{ nextcloud.backup_dir }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: true

nextcloud-backup-prepare-managed:
  file.managed:
    - name: {{ prepare_script }}
    - source: salt://nextcloud/files/nextcloud-backup-prepare.sh.j2
    - template: jinja
    - context:
        root: {{ nextcloud.root }}
        dir: {{ nextcloud.backup_dir }}
    - user: root
    - group: root
    - mode: '0755'

{{ job('nextcloud', 'nextcloud', [nextcloud.data_dir, nextcloud.backup_dir], prepare=[prepare_script],
       require=[{'file': 'nextcloud-backup-prepare-managed'}, {'file': 'nextcloud-backup-dir-managed'},
                {'file': 'nextcloud-data-dir-managed'}]) }}
