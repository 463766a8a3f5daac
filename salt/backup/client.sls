{#- The backup client of every guest that ships a job: restic from Debian, the
    folder of job files (root only), and the two commands the jobs and the
    operator run: platform-backup JOB (prepare, back up, forget and prune, check,
    report to node-exporter) and platform-restore JOB (the latest snapshot's files
    back in place). Jobs: job.jinja, declared in the roles' backup parts. #}
{%- from 'backup/map.jinja' import backup %}

backup-client-restic-installed:
  pkg.installed:
    - pkgs: {{ backup.packages | json }}

backup-client-config-dir-managed:
  file.directory:
    - names:
      - {{ backup.config_dir }}
      - {{ backup.cache_dir }}
    - user: root
    - group: root
    - mode: '0700'

backup-client-textfile-dir-managed:
  file.directory:
    - name: {{ backup.textfile_dir }}
    - mode: '0755'
    - makedirs: true

backup-client-scripts-managed:
  file.managed:
    - names:
      - /usr/local/sbin/platform-backup:
        - source: salt://backup/files/platform-backup.sh.j2
      - /usr/local/sbin/platform-restore:
        - source: salt://backup/files/platform-restore.sh.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0750'
    - context:
        config_dir: {{ backup.config_dir }}
        textfile_dir: {{ backup.textfile_dir }}
    - require:
      - pkg: backup-client-restic-installed

backup-client-service-managed:
  file.managed:
    - name: /etc/systemd/system/platform-backup@.service
    - source: salt://backup/files/platform-backup@.service.j2
    - template: jinja
    - context:
        config_dir: {{ backup.config_dir }}
    - require:
      - file: backup-client-scripts-managed
