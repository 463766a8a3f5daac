{#- The log shipper on every guest (the base role): Grafana Alloy from
    Grafana's repository reads the journal (and, on a proxy, nginx's JSON
    access log) and pushes to Loki with the labels the guest's metrics carry
    (guest, role, vmid). With `alloy` in monitoring:render_only (the lab) this
    applies nothing: its config is rendered and checked by the render tier. #}
{%- from 'monitoring/map.jinja' import render_only, watch, guest, params %}
{%- if 'alloy' not in render_only and watch.get('loki_push') and guest %}
{%- set access_logs = (params.reverse_proxy.nginx.log_dir ~ '/access.log') if 'reverse_proxy' in guest.roles else '' %}
include:
  - monitoring.repo

monitoring-shipper-package-installed:
  pkg.installed:
    - name: alloy
    - require:
      - pkgrepo: monitoring-grafana-repo-managed

monitoring-shipper-config-managed:
  file.managed:
    - name: /etc/alloy/config.alloy
    - source: salt://monitoring/files/alloy.config.j2
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
      - pkg: monitoring-shipper-package-installed

{%- for group in ['systemd-journal', 'adm'] %}

monitoring-shipper-{{ group }}-member:
  group.present:
    - name: {{ group }}
    - addusers: [alloy]
    - require:
      - pkg: monitoring-shipper-package-installed
    - watch_in:
      - service: monitoring-shipper-service-running
{%- endfor %}

monitoring-shipper-service-running:
  service.running:
    - name: alloy
    - enable: true
    - watch:
      - file: monitoring-shipper-config-managed
{%- endif %}
