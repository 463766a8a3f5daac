{#- postgresql.conf settings (a conf.d file: Debian's own postgresql.conf stays
    as packaged) and pg_hba.conf, both from the site. A settings file is checked
    by the server binary before it replaces the old one; pg_hba.conf, which no
    tool checks offline, through pg_hba_file_rules before the server reloads.
    Settings need a restart (postgresql.service), client access only a reload. #}
{%- from 'postgresql/map.jinja' import postgresql, guest, version, cluster, config_dir, bin_dir, port,
                                       databases, memory_settings, check_script %}
include:
  - postgresql.package

postgresql-config-check-script-managed:
  file.managed:
    - name: {{ check_script }}
    - source: salt://postgresql/files/pg-check-config.sh.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0755'
    - context:
        bin_dir: {{ bin_dir }}
        data_dir: /var/lib/postgresql/{{ version }}/{{ cluster }}

postgresql-config-file-managed:
  file.managed:
    - name: {{ config_dir }}/conf.d/50-platform.conf
    - source: salt://postgresql/files/platform.conf.j2
    - template: jinja
    - user: postgres
    - group: postgres
    - mode: '0644'
    - check_cmd: >-
        {{ check_script | quote }}
    - context:
        listen: {{ ['localhost', guest.get('ip', '127.0.0.1')] | unique | json }}
        port: '{{ port }}'
        max_connections: {{ postgresql.max_connections }}
        memory: {{ memory_settings | json }}
        settings: {{ postgresql.settings | json }}
    - require:
      - pkg: postgresql-package-installed
      - file: postgresql-config-check-script-managed

postgresql-hba-file-managed:
  file.managed:
    - name: {{ config_dir }}/pg_hba.conf
    - source: salt://postgresql/files/pg_hba.conf.j2
    - template: jinja
    - user: postgres
    - group: postgres
    - mode: '0640'
    - context:
        databases: {{ databases | json }}
        exporter_role: {{ postgresql.exporter.role }}
    - require:
      - pkg: postgresql-package-installed
