{#- prometheus-postgres-exporter (Debian) on the guest's own address, logged in
    over loopback as its own role (pg_monitor only). Its connection string holds
    the role's password from Vault: a failed read fails the state and the file
    keeps its content; a new password restarts the exporter only. The file's
    diff is never shown (it would print the password). #}
{%- from 'postgresql/map.jinja' import postgresql, guest, port, exporter_port, users_path %}
include:
  - postgresql.users

postgresql-exporter-env-managed:
  file.managed:
    - name: /etc/default/prometheus-postgres-exporter
    - source: salt://postgresql/files/exporter.env.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: false
    - context:
        role: {{ postgresql.exporter.role }}
        password_path: {{ users_path }}/{{ postgresql.exporter.role }}
        mount: {{ postgresql.vault.mount }}
        port: '{{ port }}'
        listen: {{ guest.get('ip', '127.0.0.1') }}:{{ exporter_port }}
    - require:
      - pkg: postgresql-package-installed
      - pg_role: postgresql-user-{{ postgresql.exporter.role }}-present

postgresql-exporter-service-running:
  unit.running:
    - name: prometheus-postgres-exporter
    - enable: true
    - watch:
      - file: postgresql-exporter-env-managed
