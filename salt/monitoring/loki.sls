{#- Loki from Grafana's apt repository, on this guest's address (the role
    catalog opens its push port to the site's guests); retention by time,
    sized to a share of the guest's disk (docs/monitoring.md). Loki has no
    offline config check: its config is checked by the render tier (L1), and
    the service must come up on it. #}
{%- from 'monitoring/map.jinja' import monitoring, own_ports, listen_ip, loki_retention_size %}
include:
  - common.grafana_repo

monitoring-loki-package-installed:
  pkg.installed:
    - name: loki
    - require:
      - pkgrepo: common-grafana-repo-managed

monitoring-loki-config-managed:
  file.managed:
    - name: /etc/loki/config.yml
    - source: salt://monitoring/files/loki.yml.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - context:
        listen_ip: {{ listen_ip }}
        port: '{{ own_ports['loki-push'] }}'
        data_dir: {{ monitoring.loki.data_dir }}
        retention_time: {{ monitoring.loki.retention_time }}
        disk_budget: {{ loki_retention_size }}
    - require:
      - pkg: monitoring-loki-package-installed

monitoring-loki-service-running:
  unit.running:
    - name: loki
    - enable: true
    - watch:
      - file: monitoring-loki-config-managed
