{#- Backup of the raft storage: a timer takes a snapshot into backup.dir and
    keeps the newest backup.keep. When the site names a backup repository, the
    job `vault` (backup/job.jinja) takes a fresh snapshot and ships backup.dir
    and the TLS folder (the internal CA the master trusts) off the guest with
    restic (docs/backup.md). Restore: docs/vault.md. The snapshot token (policy
    raft_snapshot, configure.sls) is put in place once by the root-token holder;
    without it every run fails, loudly, in the journal. #}
{%- from 'vault/map.jinja' import vault, flavor, local_url, ca_cert, tls_dir %}
{%- from 'backup/job.jinja' import job with context %}
{%- from 'backup/map.jinja' import enabled as backup_enabled %}
{%- set backup = vault.backup %}
{%- set script = '/usr/local/sbin/vault-raft-snapshot' %}
{%- set description = 'HashiCorp Vault' if vault.server.flavor == 'vault' else 'OpenBao' %}
include:
  - vault.service
{%- if backup_enabled %}
  - vault.unseal
  - backup.client
{%- endif %}

vault-backup-dir-managed:
  file.directory:
    - name: {{ backup.dir }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: true

vault-backup-script-managed:
  file.managed:
    - name: {{ script }}
    - source: salt://vault/files/raft-snapshot.sh.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0750'
    - context:
        binary: {{ flavor.binary }}
        env_prefix: {{ 'VAULT' if vault.server.flavor == 'vault' else 'BAO' }}
        addr: {{ local_url }}
        cacert: {{ ca_cert }}
        token_file: {{ flavor.config_dir }}/{{ backup.token_file }}
        dir: {{ backup.dir }}
        keep: {{ backup.keep }}

vault-backup-service-managed:
  file.managed:
    - name: /etc/systemd/system/vault-raft-snapshot.service
    - source: salt://vault/files/raft-snapshot.service.j2
    - template: jinja
    - context:
        description: {{ description }}
        service: {{ flavor.service }}
        script: {{ script }}
        dir: {{ backup.dir }}
    - require:
      - file: vault-backup-script-managed
      - file: vault-backup-dir-managed

vault-backup-timer-managed:
  file.managed:
    - name: /etc/systemd/system/vault-raft-snapshot.timer
    - source: salt://vault/files/raft-snapshot.timer.j2
    - template: jinja
    - context:
        description: {{ description }}
        on_calendar: '{{ backup.on_calendar }}'

vault-backup-timer-running:
  unit.running:
    - name: vault-raft-snapshot.timer
    - enable: true
    - watch:
      - file: vault-backup-timer-managed
      - file: vault-backup-service-managed
    - require:
      - unit: vault-service-running

{{ job('vault', 'vault', [backup.dir, tls_dir], prepare=['systemctl', 'start', 'vault-raft-snapshot.service'],
       require=[{'unit': 'vault-backup-timer-running'}, {'vault_server': 'vault-unseal-unsealed'}]) }}
