{#- The log shipper on every guest (the base state): Grafana Alloy from
    Grafana's repository reads the journal (and, on a proxy, nginx's JSON
    access log) and pushes to Loki with the labels the guest's metrics carry
    (guest, role, vmid). With monitoring:alloy:converge false (the lab) this
    applies nothing: its config is rendered and checked by the render tier. #}
{%- import 'lib/platform.jinja' as platform %}
{%- set guest = platform.guest %}
{%- set params = platform.params %}
{%- set watch = salt['pillar.get']('platform:monitoring', {}) or {} %}
{%- if params.monitoring.alloy.converge and watch.get('loki_push') and guest %}
{%- set access_logs = (params.reverse_proxy.nginx.log_dir ~ '/access.log') if 'reverse_proxy' in guest.roles else '' %}
include:
  - common.grafana_repo

common-log-shipper-package-installed:
  pkg.installed:
    - name: alloy
    - require:
      - pkgrepo: common-grafana-repo-managed

common-log-shipper-config-managed:
  file.managed:
    - name: /etc/alloy/config.alloy
    - source: salt://common/files/alloy.config.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - context:
        push_url: {{ watch.loki_push }}
        access_logs: {{ access_logs }}
        labels:
          guest: {{ guest.name }}
          role: {{ (guest.roles | reject('equalto', 'base') | join(',')) or 'base' }}
          vmid: '{{ guest.vmid }}'
    - require:
      - pkg: common-log-shipper-package-installed

{%- for group in ['systemd-journal', 'adm'] %}

common-log-shipper-{{ group }}-member:
  group.present:
    - name: {{ group }}
    - addusers: [alloy]
    - require:
      - pkg: common-log-shipper-package-installed
    - watch_in:
      - unit: common-log-shipper-service-running
{%- endfor %}

common-log-shipper-service-running:
  unit.running:
    - name: alloy
    - enable: true
    - watch:
      - file: common-log-shipper-config-managed
{%- endif %}
