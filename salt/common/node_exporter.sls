{#- prometheus-node-exporter on the guest's own address; the firewall opens it
    to the monitoring guest only. Its textfile folder exists on every guest:
    jobs publish their metrics there (docs/monitoring.md). #}
{%- from 'common/map.jinja' import common, guest, ports %}
{%- set flags = ['--web.listen-address=' ~ guest.get('ip', '127.0.0.1') ~ ':' ~ ports.get('node-exporter', '9100')] %}
{%- for collector in common.node_exporter.collectors_enabled %}
{%-   do flags.append('--collector.' ~ collector) %}
{%- endfor %}
{%- do flags.append('--collector.textfile.directory=' ~ common.node_exporter.textfile_dir) %}
{%- for collector in common.node_exporter.collectors_disabled %}
{%-   do flags.append('--no-collector.' ~ collector) %}
{%- endfor %}
include:
  - common.apt

common-node-exporter-args-managed:
  file.managed:
    - name: /etc/default/prometheus-node-exporter
    - contents: |
        # Managed by Salt (common.node_exporter)
        ARGS="{{ flags | join(' ') }}"
    - require:
      - pkg: common-apt-packages-installed

common-node-exporter-textfile-dir-managed:
  file.directory:
    - name: {{ common.node_exporter.textfile_dir }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: true
    - require:
      - pkg: common-apt-packages-installed

common-node-exporter-service-running:
  unit.running:
    - name: prometheus-node-exporter
    - enable: true
    - watch:
      - file: common-node-exporter-args-managed
    - require:
      - file: common-node-exporter-textfile-dir-managed
