{#- Grafana from Grafana's apt repository: its database in the site's
    PostgreSQL (the postgresql role generates the owner's password into Vault),
    an admin password generated into Vault (roles/monitoring/grafana), the
    Prometheus and Loki datasources and the dashboards generated in the
    repository (sitectl/dashboards.py), provisioned read-only. Secrets reach
    Grafana through files only it and root read ($__file{} in grafana.ini). #}
{%- from 'monitoring/map.jinja' import monitoring, watch, own_ports, listen_ip, domain, grafana_root_url,
                                       grafana_secrets_dir, dashboards_dir, params %}
{%- set grafana = monitoring.grafana %}
{%- set database = watch.grafana_database %}
{%- set pg_users = params.postgresql.vault.users_path %}
include:
  - common.grafana_repo

monitoring-grafana-package-installed:
  pkg.installed:
    - name: grafana
    - require:
      - pkgrepo: common-grafana-repo-managed

monitoring-grafana-admin-secret-generated:
  vault_server.secret_generated:
    - name: {{ grafana.vault_admin_path }}
    - mount: {{ monitoring.vault_mount }}
    - fields:
        admin_password: {length: 32, alphabet: alphanumeric}

{%- set secret_files = [('admin_password', grafana.vault_admin_path, 'admin_password', monitoring.vault_mount)] %}
{%- if database %}
{%-   do secret_files.append(('database_password', pg_users ~ '/' ~ database.owner, 'password',
                              params.postgresql.vault.mount)) %}
{%- endif %}
{%- for file, path, field, mount in secret_files %}

monitoring-grafana-{{ file | replace('_', '-') }}-managed:
  file.managed:
    - name: {{ grafana_secrets_dir }}/{{ file }}
    - source: salt://monitoring/files/secret.j2
    - template: jinja
    - context:
        path: {{ path }}
        field: {{ field }}
        mount: {{ mount }}
    - user: root
    - group: grafana
    - mode: '0640'
    - makedirs: true
    - dir_mode: '0750'
    - show_changes: false
    - require:
      - pkg: monitoring-grafana-package-installed
      - vault_server: monitoring-grafana-admin-secret-generated
    - watch_in:
      - unit: monitoring-grafana-service-running
{%- endfor %}

monitoring-grafana-ini-managed:
  file.managed:
    - name: /etc/grafana/grafana.ini
    - source: salt://monitoring/files/grafana.ini.j2
    - template: jinja
    - user: root
    - group: grafana
    - mode: '0640'
    - context:
        listen_ip: {{ listen_ip }}
        port: '{{ own_ports.grafana }}'
        domain: {{ domain }}
        root_url: {{ grafana_root_url }}
        database: {{ database | json }}
        secrets_dir: {{ grafana_secrets_dir }}
    - require:
      - pkg: monitoring-grafana-package-installed

monitoring-grafana-datasources-managed:
  file.managed:
    - name: /etc/grafana/provisioning/datasources/platform.yaml
    - source: salt://monitoring/files/grafana-datasources.yml.j2
    - template: jinja
    - user: root
    - group: grafana
    - mode: '0640'
    - makedirs: true
    - context:
        prometheus_url: http://{{ listen_ip }}:{{ own_ports.prometheus }}
        loki_url: http://{{ listen_ip }}:{{ own_ports['loki-push'] }}
    - require:
      - pkg: monitoring-grafana-package-installed

monitoring-grafana-dashboard-provider-managed:
  file.managed:
    - name: /etc/grafana/provisioning/dashboards/platform.yaml
    - source: salt://monitoring/files/grafana-dashboards.yml.j2
    - template: jinja
    - user: root
    - group: grafana
    - mode: '0640'
    - makedirs: true
    - context:
        dashboards_dir: {{ dashboards_dir }}
    - require:
      - pkg: monitoring-grafana-package-installed

monitoring-grafana-dashboards-managed:
  file.recurse:
    - name: {{ dashboards_dir }}
    - source: salt://monitoring/files/dashboards
    - user: root
    - group: grafana
    - file_mode: '0644'
    - dir_mode: '0755'
    - clean: true
    - makedirs: true
    - require:
      - pkg: monitoring-grafana-package-installed

monitoring-grafana-service-running:
  unit.running:
    - name: grafana-server
    - enable: true
    - watch:
      - file: monitoring-grafana-ini-managed
      - file: monitoring-grafana-datasources-managed
      - file: monitoring-grafana-dashboard-provider-managed
      - file: monitoring-grafana-dashboards-managed
